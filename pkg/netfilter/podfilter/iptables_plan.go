package podfilter

import (
	"slices"
	"strconv"

	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// created is what an ADD made in one family besides the pod's rules:
// chains and shared rules that were not there, which a failed ADD takes
// back unless something else came to rely on them.
type created struct {
	chains []string
	rules  []iptRule
	// others are the rules CNI-FORWARD held besides the attachment's: a
	// rule there that is not among them is a pod added since, which may
	// rely on what the ADD made.
	others []string
}

// plan is an iptables.Plan of the filter table that records what it
// creates.
type plan struct {
	*iptables.Plan
	made created
}

func newPlan(t *iptables.Table) *plan { return &plan{Plan: iptables.NewPlan(t)} }

func (p *plan) chain(c string) {
	if p.EnsureChain(c) {
		p.made.chains = append(p.made.chains, c)
	}
}

// has tells whether a live rule of r's chain has r's text.
func (p *plan) has(r iptRule) bool {
	return len(p.Live(func(x iptables.Rule) bool { return x.Chain == r.chain && x.Spec == r.spec })) > 0
}

// insert puts r at position pos (1-based) of its chain, unless it is there.
func (p *plan) insert(r iptRule, pos int, present bool) {
	if present {
		return
	}
	p.Emit("-I " + r.chain + " " + strconv.Itoa(pos) + " " + r.spec)
	p.made.rules = append(p.made.rules, r)
}

// afterIsolation is the position in FORWARD right after the jump to the
// isolation's stage 1, or the first when there is none: the isolation
// must see a packet before the accept rules do.
func (p *plan) afterIsolation() int {
	n := 0
	for _, i := range p.Live(iptables.InChain("FORWARD")) {
		n++
		if p.T.Rules[i].Target == stage1Chain {
			return n + 1
		}
	}
	return 1
}

// ensure plans an ADD of c: the shared chains and rules that are missing,
// the pod's rules in place of any it had. A shared jump that is there
// with other matches (an operator's) counts as there, as in the reference.
func (p *plan) ensure(c *Conf, pod []iptRule) {
	if c.accepts() {
		p.chain(forwardChain)
		p.chain(c.admin())
		p.insert(forwardJump(), p.afterIsolation(), len(p.Live(jumpFrom("FORWARD", forwardChain))) > 0)
		p.insert(adminJump(c.admin()), 1, len(p.Live(jumpFrom(forwardChain, c.admin()))) > 0)
		p.drop(isTag(c.Tag()), nil)
		for _, i := range p.Live(iptables.InChain(forwardChain)) {
			p.made.others = append(p.made.others, p.T.Rules[i].Spec)
		}
		p.Lines = append(p.Lines, lines("-A", pod)...)
	}
	if c.Isolation != nil {
		p.isolate(isolationFor(c.Isolation))
	}
}

// isolate adds the parts of a bridge's isolation that are missing; the
// jump to stage 1 goes first in FORWARD, ahead of CNI-FORWARD's.
func (p *plan) isolate(r isolationRules) {
	p.chain(stage1Chain)
	p.chain(stage2Chain)
	p.insert(r.jump, 1, len(p.Live(jumpFrom("FORWARD", stage1Chain))) > 0)
	for _, x := range r.stage1 {
		p.insert(x, 1, p.has(x))
	}
	p.insert(r.stage2, 1, p.has(r.stage2))
	for _, x := range r.returns {
		if !p.has(x) {
			p.Append(x.chain, x.spec)
			p.made.rules = append(p.made.rules, x)
		}
	}
}

func jumpFrom(chain, target string) func(iptables.Rule) bool {
	return func(r iptables.Rule) bool { return r.Chain == chain && r.Target == target }
}

// isTag picks the rules tagged tag.
func isTag(tag string) func(comment string) bool {
	return func(c string) bool { return c == tag }
}

// drop deletes the rules of CNI-FORWARD whose comment pick chooses, and the
// reference's untagged rules of the addresses refs.
func (p *plan) drop(pick func(string) bool, refs []string) {
	for _, i := range p.Live(iptables.InChain(forwardChain)) {
		r := p.T.Rules[i]
		if pick(r.Comment) || (r.Comment == "" && slices.Contains(refs, r.Spec)) {
			p.Del(i)
		}
	}
}

// undo plans taking back what a failed ADD made, once the pod's rules are
// gone, provided that no pod was added since. Chains go only when empty,
// which -X also asserts.
func (p *plan) undo(made created) {
	added := p.Live(func(r iptables.Rule) bool {
		return r.Chain == forwardChain && r.Comment != adminComment && !slices.Contains(made.others, r.Spec)
	})
	if len(added) > 0 {
		return
	}
	for _, r := range slices.Backward(made.rules) {
		if i := p.Live(func(x iptables.Rule) bool { return x.Chain == r.chain && x.Spec == r.spec }); len(i) > 0 {
			p.Del(i[0])
		}
	}
	for _, c := range slices.Backward(made.chains) {
		if p.T.Chains[c] && len(p.Live(iptables.InChain(c))) == 0 && len(p.Live(iptables.JumpsTo(c))) == 0 {
			delete(p.T.Chains, c)
			p.Emit("-X " + c)
		}
	}
}
