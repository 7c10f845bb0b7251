// Package hostport installs, checks and removes the portmap plugin's port
// mappings. It owns the model of an attachment's mappings and the plan of
// its rules (this file), and the two backends that render that plan side by
// side: IPTables, the reference's CNI-HOSTPORT-* and CNI-DN-* chains written
// with iptables-restore (iptables*.go, with a netlink fast path for the
// common DEL on iptables-nft), and NFTables, the reference's cni_hostport
// tables over netlink (nft*.go, conditions.go). Both keep the reference's
// names and tags, so that a node can switch between the reference plugin
// and this one and either cleans up the other's rules. Under pkg/netfilter
// it imports iptables and nftconn only; it must not import a plugin, the
// daemon, pkg/subnet or pkg/overlay.
package hostport

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// Names of the port-mapping chains shared by every attachment. They are the
// reference portmap plugin's, so that an operator recognises them and a node
// can switch between the two implementations.
const (
	hostPortDNATChain = "CNI-HOSTPORT-DNAT"
	hostPortMarkChain = "CNI-HOSTPORT-SETMARK"
	hostPortMasqChain = "CNI-HOSTPORT-MASQ"
	// dnatChainPrefix starts each attachment's chain.
	dnatChainPrefix = "CNI-DN-"
	// oldSNATPrefix names the per-attachment chains of reference releases
	// before v0.7; DEL still removes them, as the reference does.
	oldSNATPrefix = "CNI-SN-"
)

// OwnsChain tells whether chain of an iptables table is one the port
// mappings make (in nat: the shared chains and the attachments', also
// those of reference releases before v0.7), for `cnictl reset`.
func OwnsChain(table, chain string) bool {
	return table == "nat" && (slices.Contains([]string{hostPortDNATChain, hostPortMarkChain, hostPortMasqChain}, chain) ||
		strings.HasPrefix(chain, dnatChainPrefix) || strings.HasPrefix(chain, oldSNATPrefix))
}

// NFTTable is the nftables backend's table of family f.
func NFTTable(f family.Family) *nftables.Table {
	return &nftables.Table{Name: nftTableName, Family: nftconn.TableFamily(f)}
}

// Attachment names one CNI attachment; every port-mapping rule carries it.
type Attachment struct {
	Network     string
	ContainerID string
	IfName      string
}

// tag is the comment of every iptables port-mapping rule of the
// attachment: the reference's "dnat name: ... id: ..." with the interface
// name added, so that DEL and GC find an attachment's rules without its
// port mappings.
func (a Attachment) tag() string {
	return fmt.Sprintf("dnat name: %q id: %q ifname: %q", a.Network, a.ContainerID, a.IfName)
}

// maxComment is the kernel's limit on an xt_comment.
const maxComment = 255

// validTag reports an attachment whose tag does not fit a rule comment,
// which only an absurdly long network name can cause.
func (a Attachment) validTag() error {
	if n := len(a.tag()); n > maxComment {
		return fmt.Errorf("the port-mapping rule comment for network %q would be %d bytes, more than iptables' %d; shorten the network name", a.Network, n, maxComment)
	}
	return nil
}

var tagRE = regexp.MustCompile(`^dnat name: ("(?:[^"\\]|\\.)*") id: ("(?:[^"\\]|\\.)*")(?: ifname: ("(?:[^"\\]|\\.)*"))?$`)

// parseTag reads back a tag. A tag written by the reference plugin has no
// interface name: then ifName is "" and the rule belongs to every interface
// of the container.
func parseTag(c string) (a Attachment, ok bool) {
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

// owns tells whether a rule tagged t belongs to attachment a: same network
// and container, and the same interface or none named (the reference's).
func (a Attachment) owns(t Attachment) bool {
	return t.Network == a.Network && t.ContainerID == a.ContainerID && (t.IfName == "" || t.IfName == a.IfName)
}

// dnatChainName is the reference's per-attachment chain: "CNI-DN-" and the
// first 21 hex digits of sha512(network+containerID), 28 characters. The
// interface name is not part of it; rules of two interfaces of one
// container share the chain and are told apart by their tags.
func dnatChainName(network, containerID string) string {
	return hashedChain(dnatChainPrefix, network, containerID)
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

// Conf is what an attachment's port-mapping rules are made of.
type Conf struct {
	Attachment
	Maps    []PortMap
	SNAT    bool // masquerade hairpin and localhost connections
	MasqAll bool // masquerade every connection to a host port
	MarkBit int  // the packet mark bit that asks for masquerading
	// ExternalSetMarkChain replaces CNI-HOSTPORT-SETMARK (e.g. KUBE-MARK-MASQ);
	// then no masquerade chain of our own is made.
	ExternalSetMarkChain string
	// Conditions are extra matches of the entry rules, in the backend's
	// syntax, by family (conditionsV4, conditionsV6).
	Conditions [2][]string
}

// MapsFor returns the mappings that apply to a container address: those
// without a host IP and those whose host IP is of the same family.
func (c *Conf) MapsFor(container netip.Addr) []PortMap {
	var out []PortMap
	for _, m := range c.Maps {
		if !m.HostIP.IsValid() || family.Of(m.HostIP) == family.Of(container) {
			out = append(out, m)
		}
	}
	return out
}

// markValue is the mark with only the masquerade bit set.
func (c *Conf) markValue() uint32 { return 1 << uint(c.MarkBit) }

// Valid tells GC whether an attachment is still in use. An empty ifName
// (a reference rule) asks whether any interface of the container is.
type Valid func(containerID, ifName string) bool

// stepKind is what a rule of a mapping does.
type stepKind uint8

const (
	markHairpin   stepKind = iota // mark connections from the hairpin source for masquerading
	markLocalhost                 // mark connections from 127.0.0.1 for masquerading
	forward                       // DNAT to the container
)

// step is one rule of a mapping's plan, which each backend renders.
type step struct {
	PortMap
	kind stepKind
}

// plan lays out an attachment's rules for one container address (with its
// prefix length, which bounds hairpin masquerading), in the order both
// backends install them: per mapping of the address's family, with snat,
// the rule that marks hairpin connections for masquerading and, for IPv4
// without masqAll, the one that marks connections from localhost; then the
// DNAT rule (nat statements end a chain, so the marks come first). hairpin
// is the source the first mark rule matches: the container's subnet, or
// with masqAll every address.
func (c *Conf) plan(container netip.Prefix) (steps []step, hairpin netip.Prefix) {
	addr, f := container.Addr(), family.OfPrefix(container)
	hairpin = container.Masked()
	if c.MasqAll {
		hairpin = f.Default()
	}
	for _, m := range c.MapsFor(addr) {
		if c.SNAT {
			steps = append(steps, step{m, markHairpin})
			if f == family.IPv4 && !c.MasqAll {
				steps = append(steps, step{m, markLocalhost})
			}
		}
		steps = append(steps, step{m, forward})
	}
	return steps, hairpin
}

// boundToHostIP tells whether the mapping takes only one local address.
func (m PortMap) boundToHostIP() bool { return m.HostIP.IsValid() && !m.HostIP.IsUnspecified() }
