package podfilter

import (
	"net/netip"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// An iptables rule of the filter table, as iptables-save prints it: the
// chain and the rule's specification after "-A <chain> ". Every rule is
// written in that form, so that what a save lists compares with it as
// text.
type iptRule struct {
	chain, spec string
}

func commented(comment string) string { return "-m comment --comment " + iptables.Quote(comment) }

// forwardJump is FORWARD's jump to CNI-FORWARD.
func forwardJump() iptRule {
	return iptRule{"FORWARD", commented(forwardComment) + " -j " + forwardChain}
}

// adminJump is CNI-FORWARD's jump to the admin chain, its first rule.
func adminJump(admin string) iptRule {
	return iptRule{forwardChain, commented(adminComment) + " -j " + admin}
}

// podRules are an address's two rules in CNI-FORWARD: replies and
// related traffic to the pod, anything from it. The reference's carry no
// comment; ours carry the attachment's tag.
func podRules(a netip.Addr, tag string) []iptRule {
	h := host(a).String()
	return []iptRule{
		{forwardChain, "-d " + h + " -m conntrack --ctstate RELATED,ESTABLISHED " + commented(tag) + " -j ACCEPT"},
		{forwardChain, "-s " + h + " " + commented(tag) + " -j ACCEPT"},
	}
}

// referenceRules are podRules as the reference plugin writes them.
func referenceRules(a netip.Addr) []string {
	h := host(a).String()
	return []string{"-d " + h + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "-s " + h + " -j ACCEPT"}
}

// isolationRules are the reference's isolation of a bridge, in the order
// they must end up in each chain: FORWARD's jump to stage 1 (first in
// FORWARD, ahead of CNI-FORWARD); in stage 1, traffic leaving the bridge
// for another interface goes to stage 2 and, when isolated, traffic
// between the bridge's ports is dropped; stage 2 drops what enters the
// bridge from elsewhere. Each stage ends in a RETURN.
type isolationRules struct {
	jump    iptRule
	stage1  []iptRule // inserted at the top of stage 1, in this order
	returns []iptRule // appended to each stage
	stage2  iptRule   // inserted at the top of stage 2
}

func isolationFor(iso *Isolation) isolationRules {
	br, pc := iso.Bridge, commented(iso.policyComment())
	r := isolationRules{
		jump: iptRule{"FORWARD", commented(isolationComment) + " -j " + stage1Chain},
		stage1: []iptRule{
			{stage1Chain, "-i " + br + " ! -o " + br + " " + pc + " -j " + stage2Chain},
		},
		returns: []iptRule{
			{stage1Chain, commented(isolationComment) + " -j RETURN"},
			{stage2Chain, commented(isolationComment) + " -j RETURN"},
		},
		stage2: iptRule{stage2Chain, "-o " + br + " " + commented(isolationComment) + " -j DROP"},
	}
	if iso.Isolated {
		r.stage1 = append(r.stage1, iptRule{stage1Chain, "-i " + br + " -o " + br + " " + pc + " -j DROP"})
	}
	return r
}

// all lists every rule of the isolation.
func (r isolationRules) all() []iptRule {
	return append(append([]iptRule{r.jump}, r.stage1...), append(r.returns, r.stage2)...)
}

// wanted lists every rule an ADD of c relies on in family f: the shared
// ones first, then the pod's.
func wanted(c *Conf, f family.Family) (shared, pod []iptRule) {
	if c.accepts() {
		shared = append(shared, forwardJump(), adminJump(c.admin()))
		for _, a := range c.addrsOf(f) {
			pod = append(pod, podRules(a, c.Tag())...)
		}
	}
	if c.Isolation != nil {
		shared = append(shared, isolationFor(c.Isolation).all()...)
	}
	return shared, pod
}

// lines makes one restore line of op per rule.
func lines(op string, rules []iptRule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = op + " " + r.chain + " " + r.spec
	}
	return out
}
