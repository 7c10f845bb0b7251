// Package podfilter installs, checks and removes the firewall plugin's
// rules: forwarded traffic from a pod, and to it within connections it
// made, accepted ahead of the node's FORWARD policy, after the admin's
// overrides; and, for the ingressPolicy same-bridge or isolated, the
// bridge's isolation. It owns the model of an attachment's rules (this
// file) and two backends that render it side by side: IPTables, the
// reference plugin's CNI-FORWARD, CNI-ADMIN and CNI-ISOLATION-STAGE-1/2
// chains of the filter table written with iptables-restore (iptables*.go,
// with a netlink path for DEL and GC on iptables-nft), and NFTables, the
// same chains in a table of the suite's own over netlink (nft*.go). Every
// pod rule carries its attachment in its comment, so DEL and GC find it
// without the pod's addresses. Under pkg/netfilter it imports iptables and
// nftconn only; it must not import a plugin, the daemon, pkg/subnet or
// pkg/overlay.
package podfilter

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/cnisuite/cni/pkg/family"
)

// The chains, named as the reference plugin names them, so that a node can
// switch between the two and operators find what they know.
const (
	forwardChain = "CNI-FORWARD"
	// DefaultAdminChain is where an admin puts rules that override the
	// pods' accept rules (iptablesAdminChainName's default).
	DefaultAdminChain = "CNI-ADMIN"
	stage1Chain       = "CNI-ISOLATION-STAGE-1"
	stage2Chain       = "CNI-ISOLATION-STAGE-2"
)

// OwnsChain tells whether chain of an iptables table is one the firewall
// makes (its admin chain by the default name), for `cnictl reset`.
func OwnsChain(table, chain string) bool {
	return table == "filter" && slices.Contains([]string{forwardChain, DefaultAdminChain, stage1Chain, stage2Chain}, chain)
}

// ReservedChain tells whether name cannot be an admin chain: a chain of
// the firewall's own, a built-in chain or a target.
func ReservedChain(name string) bool {
	return slices.Contains([]string{forwardChain, stage1Chain, stage2Chain,
		"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING", "ACCEPT", "DROP", "RETURN", "QUEUE", "REJECT"}, name)
}

// Attachment names one CNI attachment; every pod rule carries it.
type Attachment struct {
	Network     string
	ContainerID string
	IfName      string
}

// Tag is the comment of each of the attachment's rules, the same in both
// backends. Its three names are percent-encoded where they hold a space,
// a quote, a backslash, a percent sign or a byte outside printable ASCII,
// so that the tag is three words nft and iptables print unescaped.
func (a Attachment) Tag() string {
	return "firewall name: " + escape(a.Network) + " id: " + escape(a.ContainerID) + " ifname: " + escape(a.IfName)
}

// MaxTag is the longest comment both backends keep whole: nftables keeps
// 256 bytes of a rule's user data, two of which are the comment's header
// (iptables keeps 255 bytes).
const MaxTag = 254

// ValidTag reports an attachment whose tag would not fit, which only an
// absurdly long network name or container ID can cause.
func (a Attachment) ValidTag() error {
	if n := len(a.Tag()); n > MaxTag {
		return fmt.Errorf("the firewall rule comment for network %q would be %d bytes, more than the %d iptables and nftables keep; shorten the network name", a.Network, n, MaxTag)
	}
	return nil
}

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '%' || c == '\'' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// parseTag reads back a Tag.
func parseTag(s string) (Attachment, bool) {
	f := strings.Split(s, " ")
	if len(f) != 7 || f[0] != "firewall" || f[1] != "name:" || f[3] != "id:" || f[5] != "ifname:" {
		return Attachment{}, false
	}
	var a Attachment
	var errs [3]error
	a.Network, errs[0] = url.PathUnescape(f[2])
	a.ContainerID, errs[1] = url.PathUnescape(f[4])
	a.IfName, errs[2] = url.PathUnescape(f[6])
	return a, errs == [3]error{}
}

// Valid tells GC whether an attachment is still in use.
type Valid func(containerID, ifName string) bool

// Isolation is the ingressPolicy same-bridge or isolated of the pod's
// bridge: traffic from another bridge to it is dropped and, when isolated,
// traffic between its own ports too.
type Isolation struct {
	Bridge   string
	Isolated bool
	// Only sets up the isolation without the accept rules, in the families
	// of Conf.Addrs: the firewalld backend, whose zone accepts the pod.
	Only bool
}

// policy is the ingressPolicy's name, as the rules' comments say it.
func (iso *Isolation) policy() string {
	if iso.Isolated {
		return "isolated"
	}
	return "same-bridge"
}

// Conf is what an attachment's firewall rules are made of.
type Conf struct {
	Attachment
	// AdminChain is jumped to ahead of the pods' accept rules
	// (iptablesAdminChainName); "" is DefaultAdminChain.
	AdminChain string
	// Addrs are the pod's addresses: each is accepted as a source, and as a
	// destination within connections the pod is part of.
	Addrs []netip.Addr
	// Isolation is nil for the ingressPolicy open.
	Isolation *Isolation
}

func (c *Conf) admin() string {
	if c.AdminChain == "" {
		return DefaultAdminChain
	}
	return c.AdminChain
}

// accepts tells whether c wants accept rules, besides any isolation.
func (c *Conf) accepts() bool { return c.Isolation == nil || !c.Isolation.Only }

// families are the families of c's addresses, IPv4 first.
func (c *Conf) families() []family.Family {
	var out []family.Family
	for _, f := range family.All() {
		if slices.ContainsFunc(c.Addrs, func(a netip.Addr) bool { return family.Of(a) == f }) {
			out = append(out, f)
		}
	}
	return out
}

// addrsOf are c's addresses of family f.
func (c *Conf) addrsOf(f family.Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range c.Addrs {
		if family.Of(a) == f {
			out = append(out, a)
		}
	}
	return out
}

// host is a as a single-address prefix, as the rules match it.
func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// The reference's comments of the shared rules, word for word, so that
// either implementation finds the other's rules.
const (
	forwardComment   = "CNI firewall plugin rules"
	adminComment     = "CNI firewall plugin admin overrides"
	isolationComment = "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)"
)

// policyComment tags the isolation rules of one policy.
func (iso *Isolation) policyComment() string {
	return "CNI firewall plugin rules (ingressPolicy: " + iso.policy() + ")"
}
