package hostport

import (
	"slices"

	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// plan turns what iptables-save showed into the lines of one restore. It
// deletes rules by their exact text and chains with -X, never by flushing a
// chain someone else may be writing to: a rule another process deleted or a
// chain it filled meanwhile makes the restore fail as a whole, and the
// caller reads again and re-plans.
type plan struct {
	t     *iptables.Table
	gone  []bool // rules of t deleted by this plan
	lines []string
}

func newPlan(t *iptables.Table) *plan {
	return &plan{t: t, gone: make([]bool, len(t.Rules))}
}

func (p *plan) emit(line string) { p.lines = append(p.lines, line) }

// live returns the indexes of the rules not deleted yet that match keep.
func (p *plan) live(keep func(iptables.Rule) bool) []int {
	var out []int
	for i, r := range p.t.Rules {
		if !p.gone[i] && keep(r) {
			out = append(out, i)
		}
	}
	return out
}

func (p *plan) del(i int) {
	r := p.t.Rules[i]
	p.gone[i] = true
	p.emit("-D " + r.Chain + " " + r.Spec)
}

func (p *plan) appendRule(chain, spec string) {
	p.emit("-A " + chain + " " + spec)
}

// inChain and jumpsTo are the common filters.
func inChain(c string) func(iptables.Rule) bool {
	return func(r iptables.Rule) bool { return r.Chain == c }
}
func jumpsTo(c string) func(iptables.Rule) bool {
	return func(r iptables.Rule) bool { return r.Target == c }
}

// hasArg tells whether a rule spec contains flag followed by value.
func hasArg(spec, flag, value string) bool {
	toks := iptables.Tokenize(spec)
	for i := 0; i+1 < len(toks); i++ {
		if toks[i] == flag && toks[i+1] == value {
			return true
		}
	}
	return false
}

// ensureChain creates a chain with -N, which fails (and aborts the
// transaction) if another process created it since the read, instead of
// flushing it as a ":chain" declaration would.
func (p *plan) ensureChain(c string) {
	if !p.t.Chains[c] {
		p.t.Chains[c] = true
		p.emit("-N " + c)
	}
}

// ensurePlumbing adds whatever part of the shared chains r relies on is
// missing. A rule that is there with other matches (an operator's, or
// another release's) counts as there, as in the reference.
func (p *plan) ensurePlumbing(r iptRules) {
	p.ensureChain(hostPortDNATChain)
	for _, c := range []string{"PREROUTING", "OUTPUT"} {
		if len(p.live(func(x iptables.Rule) bool { return x.Chain == c && x.Target == hostPortDNATChain })) == 0 {
			p.appendRule(c, dstLocalSpec)
		}
	}
	if !r.ownMasq {
		return
	}
	p.ensureChain(hostPortMarkChain)
	if len(p.live(func(x iptables.Rule) bool {
		return x.Chain == hostPortMarkChain && hasArg(x.Spec, "--set-xmark", r.mark)
	})) == 0 {
		p.appendRule(hostPortMarkChain, markRuleSpec(r.mark))
	}
	p.ensureChain(hostPortMasqChain)
	if len(p.live(func(x iptables.Rule) bool {
		return x.Chain == hostPortMasqChain && x.Target == "MASQUERADE" && hasArg(x.Spec, "--mark", r.mark)
	})) == 0 {
		p.appendRule(hostPortMasqChain, masqRuleSpec(r.mark))
	}
	if len(p.live(func(x iptables.Rule) bool { return x.Chain == "POSTROUTING" && x.Target == hostPortMasqChain })) == 0 {
		// First in POSTROUTING: the bridge's masquerade chains ACCEPT
		// traffic within the pod subnet, which hairpin traffic is.
		p.emit("-I POSTROUTING 1 " + masqJumpSpec())
	}
}

// owned tells whether a rule belongs to att: tagged for it, or an untagged
// rule (the reference's) in, or jumping to, the attachment's chain.
func owned(att Attachment, r iptables.Rule) bool {
	t, ok := parseTag(r.Comment)
	if !ok {
		return true
	}
	return att.owns(t)
}

// dropAttachment deletes att's rules in its chain and the jumps to that
// chain, keeping the rules of the container's other interfaces; when no
// rule is left in the chain, the chain goes too. It reports whether it
// deleted anything.
func (p *plan) dropAttachment(att Attachment, keepChain bool) bool {
	chain := dnatChainName(att.Network, att.ContainerID)
	if !p.t.Chains[chain] {
		return false
	}
	n := len(p.lines)
	mine := func(r iptables.Rule) bool { return (r.Chain == chain || r.Target == chain) && owned(att, r) }
	for _, i := range p.live(mine) {
		p.del(i)
	}
	if !keepChain && len(p.live(inChain(chain))) == 0 {
		p.removeChain(chain)
	}
	return len(p.lines) > n
}

// removeChain deletes every rule in and every jump to chain, then chain.
func (p *plan) removeChain(chain string) {
	for _, i := range p.live(func(r iptables.Rule) bool { return r.Chain == chain || r.Target == chain }) {
		p.del(i)
	}
	delete(p.t.Chains, chain)
	p.emit("-X " + chain)
}

// dropOldSNAT removes the chain of reference releases before v0.7.
func (p *plan) dropOldSNAT(att Attachment) {
	if c := hashedChain(oldSNATPrefix, att.Network, att.ContainerID); p.t.Chains[c] {
		p.removeChain(c)
	}
}

// teardownShared removes the shared chains once nothing uses them, so that
// a node without port mappings has none of our rules. -X fails if another
// process added a rule or a jump since the read, which aborts the
// transaction instead of breaking that process's mapping.
func (p *plan) teardownShared() {
	if p.t.Chains[hostPortDNATChain] && len(p.live(inChain(hostPortDNATChain))) == 0 {
		p.removeChain(hostPortDNATChain)
	}
	if len(p.live(jumpsTo(hostPortMarkChain))) > 0 {
		return
	}
	for _, c := range []string{hostPortMarkChain, hostPortMasqChain} {
		if p.t.Chains[c] {
			p.removeChain(c)
		}
	}
}

// staleAttachments lists the attachments of network with rules in the
// table that valid rejects, from the tags of rules in or jumping to their
// chain (a tag on any other chain is not ours).
func staleAttachments(t *iptables.Table, network string, valid Valid) []Attachment {
	var out []Attachment
	for _, r := range t.Rules {
		a, ok := parseTag(r.Comment)
		if !ok || a.Network != network || slices.Contains(out, a) {
			continue
		}
		chain := dnatChainName(a.Network, a.ContainerID)
		if (r.Chain == chain || r.Target == chain) && !valid(a.ContainerID, a.IfName) {
			out = append(out, a)
		}
	}
	return out
}
