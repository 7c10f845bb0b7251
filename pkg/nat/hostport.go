package nat

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
)

// Names of the port-mapping chains shared by every attachment. They are the
// reference portmap plugin's, so that an operator recognises them and a node
// can switch between the two implementations.
const (
	HostPortDNATChain = "CNI-HOSTPORT-DNAT"
	HostPortMarkChain = "CNI-HOSTPORT-SETMARK"
	HostPortMasqChain = "CNI-HOSTPORT-MASQ"
	// oldSNATPrefix names the per-attachment chains of reference releases
	// before v0.7; DEL still removes them, as the reference does.
	oldSNATPrefix = "CNI-SN-"
)

// Attachment names one CNI attachment; every port-mapping rule carries it.
type Attachment struct {
	Network     string
	ContainerID string
	IfName      string
}

// Tag is the comment of every port-mapping rule of the attachment: the
// reference's "dnat name: ... id: ..." with the interface name added, so
// that DEL and GC find an attachment's rules without its port mappings.
func (a Attachment) Tag() string {
	return fmt.Sprintf("dnat name: %q id: %q ifname: %q", a.Network, a.ContainerID, a.IfName)
}

// maxComment is the kernel's limit on an xt_comment.
const maxComment = 255

// ValidTag reports an attachment whose tag does not fit a rule comment,
// which only an absurdly long network name can cause.
func (a Attachment) ValidTag() error {
	if n := len(a.Tag()); n > maxComment {
		return fmt.Errorf("the port-mapping rule comment for network %q would be %d bytes, more than iptables' %d; shorten the network name", a.Network, n, maxComment)
	}
	return nil
}

var tagRE = regexp.MustCompile(`^dnat name: ("(?:[^"\\]|\\.)*") id: ("(?:[^"\\]|\\.)*")(?: ifname: ("(?:[^"\\]|\\.)*"))?$`)

// ParseTag reads back a Tag. A tag written by the reference plugin has no
// interface name: then ifName is "" and the rule belongs to every interface
// of the container.
func ParseTag(c string) (a Attachment, ok bool) {
	m := tagRE.FindStringSubmatch(c)
	if m == nil {
		return a, false
	}
	var err1, err2, err3 error
	a.Network, err1 = strconv.Unquote(m[1])
	a.ContainerID, err2 = strconv.Unquote(m[2])
	if m[3] != "" {
		a.IfName, err3 = strconv.Unquote(m[3])
	}
	return a, err1 == nil && err2 == nil && err3 == nil
}

// Owns tells whether a rule tagged t belongs to attachment a: same network
// and container, and the same interface or none named (the reference's).
func (a Attachment) Owns(t Attachment) bool {
	return t.Network == a.Network && t.ContainerID == a.ContainerID && (t.IfName == "" || t.IfName == a.IfName)
}

// DNATChainName is the reference's per-attachment chain: "CNI-DN-" and the
// first 21 hex digits of sha512(network+containerID), 28 characters. The
// interface name is not part of it; rules of two interfaces of one
// container share the chain and are told apart by their tags.
func DNATChainName(network, containerID string) string {
	return hashedChain("CNI-DN-", network, containerID)
}

func hashedChain(prefix, network, containerID string) string {
	sum := sha512.Sum512([]byte(network + containerID))
	return (prefix + hex.EncodeToString(sum[:]))[:28]
}

// PortMap is one host port forwarded to the container.
type PortMap struct {
	HostPort      uint16
	ContainerPort uint16
	Protocol      string     // tcp, udp or sctp
	HostIP        netip.Addr // the zero Addr or an unspecified one: every local address
}

// HostPortConf is what an attachment's port-mapping rules are made of.
type HostPortConf struct {
	Attachment
	Maps    []PortMap
	SNAT    bool // masquerade hairpin and localhost connections
	MasqAll bool // masquerade every connection to a host port
	MarkBit int  // the packet mark bit that asks for masquerading
	// ExternalSetMarkChain replaces CNI-HOSTPORT-SETMARK (e.g. KUBE-MARK-MASQ);
	// then no masquerade chain of our own is made.
	ExternalSetMarkChain string
	ConditionsV4         []string // extra matches of the entry rules, in the backend's syntax
	ConditionsV6         []string
}

// MapsFor returns the mappings that apply to a container address: those
// without a host IP and those whose host IP is of the same family.
func (c *HostPortConf) MapsFor(container netip.Addr) []PortMap {
	var out []PortMap
	for _, m := range c.Maps {
		if !m.HostIP.IsValid() || m.HostIP.Is6() == container.Is6() {
			out = append(out, m)
		}
	}
	return out
}

// Conditions returns the conditions of the container address's family.
func (c *HostPortConf) Conditions(container netip.Addr) []string {
	if container.Is6() {
		return c.ConditionsV6
	}
	return c.ConditionsV4
}

// MarkValue is the mark with only the masquerade bit set.
func (c *HostPortConf) MarkValue() uint32 { return 1 << uint(c.MarkBit) }

// Valid tells GC whether an attachment is still in use. An empty ifName
// (a reference rule) asks whether any interface of the container is.
type Valid func(containerID, ifName string) bool
