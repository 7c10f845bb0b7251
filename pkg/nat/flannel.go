package nat

import (
	"fmt"
	"net/netip"
)

// flanneld's host rules, with its chain names and comments, so that a node
// can move between flanneld and subnetd and either one finds and replaces or
// removes the other's rules.
const (
	FlannelMasqChain    = "FLANNEL-POSTRTG" // in nat POSTROUTING
	FlannelForwardChain = "FLANNEL-FWD"     // in filter FORWARD
	flannelMasqComment  = "flanneld masq"
	flannelFwdComment   = "flanneld forward"
	// kubeProxyMark is the mark kube-proxy puts on packets it will
	// masquerade itself; masquerading them twice breaks some kernels.
	kubeProxyMark = "0x4000/0x4000"
)

// FlannelNet is one family's cluster network and this node's subnet of it.
type FlannelNet struct {
	Network netip.Prefix // the cluster's pod network, e.g. 10.244.0.0/16
	Subnet  netip.Prefix // this node's lease, e.g. 10.244.3.0/24
}

// FlannelRules is the host rules a node should have; a family without a net
// in Nets, or a chain whose feature is off, should have none of them.
type FlannelRules struct {
	Nets []FlannelNet // at most one per family
	// Masq masquerades traffic from pods to outside the cluster network and
	// from the host to pods (flanneld's --ip-masq).
	Masq bool
	// Forward accepts forwarded traffic from and to the cluster network even
	// under a FORWARD policy of DROP (flanneld's --iptables-forward-rules).
	Forward bool
	// NoRandomFully leaves --random-fully off the MASQUERADE rules
	// (flanneld's --ip-masq-random-fully-disable).
	NoRandomFully bool
}

// Validate rejects nets that are not one per family or whose subnet lies
// outside the network.
func (r FlannelRules) Validate() error {
	seen := map[bool]bool{}
	for _, n := range r.Nets {
		v6 := n.Network.Addr().Is6()
		switch {
		case !n.Network.IsValid() || !n.Subnet.IsValid():
			return fmt.Errorf("flannel host rules: network %s and subnet %s must both be given", n.Network, n.Subnet)
		case n.Subnet.Addr().Is6() != v6 || n.Subnet.Bits() < n.Network.Bits() || !n.Network.Contains(n.Subnet.Addr()):
			return fmt.Errorf("flannel host rules: subnet %s is not inside network %s", n.Subnet, n.Network)
		case seen[v6]:
			return fmt.Errorf("flannel host rules: two networks of one family (%s); give one per family", n.Network)
		}
		seen[v6] = true
	}
	return nil
}

func (r FlannelRules) netOf(f family) (FlannelNet, bool) {
	for _, n := range r.Nets {
		if n.Network.Addr().Is6() == f.v6 {
			return FlannelNet{n.Network.Masked(), n.Subnet.Masked()}, true
		}
	}
	return FlannelNet{}, false
}

// flannelChain is one of the two chains: where it hangs, and its rules as
// iptables-save prints them (the form Check compares with).
type flannelChain struct {
	table, parent, name string
	jump                string   // the parent's rule spec jumping to name
	rules               []string // specs, in order
}

// chains returns, for one family, both chains; rules is nil for a chain
// that should not exist.
func (r FlannelRules) chains(f family) []flannelChain {
	masq := flannelChain{table: "nat", parent: "POSTROUTING", name: FlannelMasqChain,
		jump: flannelJump(flannelMasqComment, FlannelMasqChain)}
	fwd := flannelChain{table: "filter", parent: "FORWARD", name: FlannelForwardChain,
		jump: flannelJump(flannelFwdComment, FlannelForwardChain)}
	n, ok := r.netOf(f)
	if ok && r.Masq {
		masq.rules = r.masqRules(f, n)
	}
	if ok && r.Forward {
		fwd.rules = []string{
			flannelRule(fmt.Sprintf("-s %s", n.Network), flannelFwdComment, "-j ACCEPT"),
			flannelRule(fmt.Sprintf("-d %s", n.Network), flannelFwdComment, "-j ACCEPT"),
		}
	}
	return []flannelChain{masq, fwd}
}

// masqRules are flanneld's (v0.28) POSTROUTING rules, first match wins.
func (r FlannelRules) masqRules(f family, n FlannelNet) []string {
	masquerade := "-j MASQUERADE --random-fully"
	if r.NoRandomFully {
		masquerade = "-j MASQUERADE"
	}
	N, S := n.Network, n.Subnet
	return []string{
		// kube-proxy masquerades what it marked; doing it again breaks some kernels.
		flannelRule("-m mark --mark "+kubeProxyMark, flannelMasqComment, "-j RETURN"),
		// Pod to pod traffic keeps its addresses, both ways.
		flannelRule(fmt.Sprintf("-s %s -d %s", S, N), flannelMasqComment, "-j RETURN"),
		flannelRule(fmt.Sprintf("-s %s -d %s", N, S), flannelMasqComment, "-j RETURN"),
		// Outside traffic to this node's pods arrives with its own source: keep it.
		flannelRule(fmt.Sprintf("! -s %s -d %s", N, S), flannelMasqComment, "-j RETURN"),
		// Pods to the outside world (but not multicast) leave as the node.
		flannelRule(fmt.Sprintf("-s %s ! -d %s", N, f.multicast), flannelMasqComment, masquerade),
		// The host to other nodes' pods: the reply must come back through the overlay.
		flannelRule(fmt.Sprintf("! -s %s -d %s", N, N), flannelMasqComment, masquerade),
	}
}

// flannelRule joins matches, comment and target in the order iptables-save
// prints them.
func flannelRule(match, comment, target string) string {
	return match + " -m comment --comment " + quote(comment) + " " + target
}

func flannelJump(comment, chain string) string {
	return "-m comment --comment " + quote(comment) + " -j " + chain
}
