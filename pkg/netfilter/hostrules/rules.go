// Package hostrules applies, checks and removes subnetd's host rules, which
// are flanneld's: masquerading of what pods send out of the cluster network
// and acceptance of forwarded cluster traffic. It owns one model of those
// rules (Rules, listed once per family in this file) and two backends that
// render it side by side: IPTables, flanneld's FLANNEL-POSTRTG and
// FLANNEL-FWD chains written with iptables-restore (iptables.go), and
// NFTables, flanneld's flannel-ipv4 and flannel-ipv6 tables over netlink
// (nft.go). The names are flanneld's, so that a node can move between
// flanneld and subnetd and either one finds and replaces or removes the
// other's rules. ForwardDrops (forward.go) reads what else at the forward
// hook drops cluster traffic, for `cnictl doctor`. Under pkg/netfilter it
// imports iptables and nftconn only; it must not import a plugin, the
// daemon, pkg/subnet or pkg/overlay.
package hostrules

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cnisuite/cni/pkg/family"
)

// Net is one family's cluster network and this node's subnet of it.
type Net struct {
	Network netip.Prefix // the cluster's pod network, e.g. 10.244.0.0/16
	Subnet  netip.Prefix // this node's lease, e.g. 10.244.3.0/24
}

// Rules is the host rules a node should have; a family without a net in
// Nets, or a chain whose feature is off, should have none of them.
type Rules struct {
	Nets []Net // at most one per family
	// Masq masquerades traffic from pods to outside the cluster network and
	// from the host to pods (flanneld's --ip-masq).
	Masq bool
	// Forward accepts forwarded traffic from and to the cluster network even
	// under a FORWARD policy of DROP (flanneld's --iptables-forward-rules).
	Forward bool
	// NoRandomFully leaves fully random port allocation off the masquerade
	// rules (flanneld's --ip-masq-random-fully-disable).
	NoRandomFully bool
}

// ErrRandomFullyUnsupported says iptables or the kernel refused
// --random-fully; set Rules.NoRandomFully.
var ErrRandomFullyUnsupported = errors.New("this iptables or kernel does not support MASQUERADE --random-fully; turn fully random masquerading off")

// validate rejects nets that are not one per family or whose subnet lies
// outside the network.
func (r Rules) validate() error {
	var seen [2]bool
	for _, n := range r.Nets {
		f := family.OfPrefix(n.Network)
		switch {
		case !n.Network.IsValid() || !n.Subnet.IsValid():
			return fmt.Errorf("flannel host rules: network %s and subnet %s must both be given", n.Network, n.Subnet)
		case family.OfPrefix(n.Subnet) != f || n.Subnet.Bits() < n.Network.Bits() || !n.Network.Contains(n.Subnet.Addr()):
			return fmt.Errorf("flannel host rules: subnet %s is not inside network %s", n.Subnet, n.Network)
		case seen[f]:
			return fmt.Errorf("flannel host rules: two networks of one family (%s); give one per family", n.Network)
		}
		seen[f] = true
	}
	return nil
}

// netOf is r's net of family f, masked; ok is false when r has none.
func (r Rules) netOf(f family.Family) (n Net, ok bool) {
	for _, n := range r.Nets {
		if family.OfPrefix(n.Network) == f {
			return Net{n.Network.Masked(), n.Subnet.Masked()}, true
		}
	}
	return Net{}, false
}

// wants tells whether family f should hold any rule.
func (r Rules) wants(f family.Family) bool {
	_, ok := r.netOf(f)
	return ok && (r.Masq || r.Forward)
}

// chainKind is one of the two chains of each backend.
type chainKind uint8

const (
	masqChain    chainKind = iota // in nat, at postrouting
	forwardChain                  // in filter, at forward
)

// kubeProxyMark is the mark kube-proxy puts on packets it will masquerade
// itself; masquerading them twice breaks some kernels.
const kubeProxyMark = 0x4000

// verdict is what a rule does with a packet it matches.
type verdict uint8

const (
	ret verdict = iota // leave the chain: no masquerading
	masquerade
	accept
)

// addrMatch matches an address field against a prefix ("!=" with not);
// the zero value matches everything.
type addrMatch struct {
	p   netip.Prefix
	not bool
}

func in(p netip.Prefix) addrMatch    { return addrMatch{p: p} }
func notIn(p netip.Prefix) addrMatch { return addrMatch{p: p, not: true} }

// rule is one host rule as both backends write it: matches, then a verdict.
type rule struct {
	marked      bool // carries kubeProxyMark
	src, dst    addrMatch
	verdict     verdict
	fullyRandom bool // a masquerade with random ports
}

// rules lists, for family f, each chain's rules in order (first match
// wins); nil for a chain that should not exist.
func (r Rules) rules(f family.Family) [2][]rule {
	var out [2][]rule
	n, ok := r.netOf(f)
	if ok && r.Masq {
		out[masqChain] = r.masqRules(f, n)
	}
	if ok && r.Forward {
		out[forwardChain] = []rule{{src: in(n.Network), verdict: accept}, {dst: in(n.Network), verdict: accept}}
	}
	return out
}

// masqRules are flanneld's (v0.28) POSTROUTING rules.
func (r Rules) masqRules(f family.Family, n Net) []rule {
	N, S := n.Network, n.Subnet
	masq := func(src, dst addrMatch) rule {
		return rule{src: src, dst: dst, verdict: masquerade, fullyRandom: !r.NoRandomFully}
	}
	return []rule{
		// kube-proxy masquerades what it marked; doing it again breaks some kernels.
		{marked: true, verdict: ret},
		// Pod to pod traffic keeps its addresses, both ways.
		{src: in(S), dst: in(N), verdict: ret},
		{src: in(N), dst: in(S), verdict: ret},
		// Outside traffic to this node's pods arrives with its own source: keep it.
		{src: notIn(N), dst: in(S), verdict: ret},
		// Pods to the outside world (but not multicast) leave as the node.
		masq(in(N), notIn(f.Multicast())),
		// The host to other nodes' pods: the reply must come back through the overlay.
		masq(notIn(N), in(N)),
	}
}
