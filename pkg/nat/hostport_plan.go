package nat

import (
	"slices"
	"strings"
)

// plan turns what iptables-save showed into the lines of one restore. It
// deletes rules by their exact text and chains with -X, never by flushing a
// chain someone else may be writing to: a rule another process deleted or a
// chain it filled meanwhile makes the restore fail as a whole, and the
// caller reads again and re-plans.
type plan struct {
	t     *natTable
	gone  []bool // rules of t deleted by this plan
	lines []string
}

func newPlan(t *natTable) *plan {
	return &plan{t: t, gone: make([]bool, len(t.rules))}
}

func (p *plan) emit(line string) { p.lines = append(p.lines, line) }

// live returns the indexes of the rules not deleted yet that match keep.
func (p *plan) live(keep func(rule) bool) []int {
	var out []int
	for i, r := range p.t.rules {
		if !p.gone[i] && keep(r) {
			out = append(out, i)
		}
	}
	return out
}

func (p *plan) del(i int) {
	r := p.t.rules[i]
	p.gone[i] = true
	p.emit("-D " + r.chain + " " + r.spec)
}

func (p *plan) appendRule(chain, spec string) {
	p.emit("-A " + chain + " " + spec)
}

// inChain and jumpsTo are the common filters.
func inChain(c string) func(rule) bool { return func(r rule) bool { return r.chain == c } }
func jumpsTo(c string) func(rule) bool { return func(r rule) bool { return r.target == c } }

// hasArg tells whether a rule spec contains flag followed by value.
func hasArg(spec, flag, value string) bool {
	toks := tokenize(spec)
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
	if !p.t.chains[c] {
		p.t.chains[c] = true
		p.emit("-N " + c)
	}
}

// ensurePlumbing adds whatever part of the shared chains r relies on is
// missing. A rule that is there with other matches (an operator's, or
// another release's) counts as there, as in the reference.
func (p *plan) ensurePlumbing(r hpRules) {
	p.ensureChain(HostPortDNATChain)
	for _, c := range []string{"PREROUTING", "OUTPUT"} {
		if len(p.live(func(x rule) bool { return x.chain == c && x.target == HostPortDNATChain })) == 0 {
			p.appendRule(c, dstLocalSpec)
		}
	}
	if !r.ownMasq {
		return
	}
	p.ensureChain(HostPortMarkChain)
	if len(p.live(func(x rule) bool { return x.chain == HostPortMarkChain && hasArg(x.spec, "--set-xmark", r.mark) })) == 0 {
		p.appendRule(HostPortMarkChain, markRuleSpec(r.mark))
	}
	p.ensureChain(HostPortMasqChain)
	if len(p.live(func(x rule) bool {
		return x.chain == HostPortMasqChain && x.target == "MASQUERADE" && hasArg(x.spec, "--mark", r.mark)
	})) == 0 {
		p.appendRule(HostPortMasqChain, masqRuleSpec(r.mark))
	}
	if len(p.live(func(x rule) bool { return x.chain == "POSTROUTING" && x.target == HostPortMasqChain })) == 0 {
		// First in POSTROUTING: the bridge's masquerade chains ACCEPT
		// traffic within the pod subnet, which hairpin traffic is.
		p.emit("-I POSTROUTING 1 " + masqJumpSpec())
	}
}

// owned tells whether a rule belongs to att: tagged for it, or an untagged
// rule (the reference's) in, or jumping to, the attachment's chain.
func owned(att Attachment, r rule) bool {
	t, ok := ParseTag(r.comment)
	if !ok {
		return true
	}
	return att.Owns(t)
}

// dropAttachment deletes att's rules in its chain and the jumps to that
// chain, keeping the rules of the container's other interfaces; when no
// rule is left in the chain, the chain goes too. It reports whether it
// deleted anything.
func (p *plan) dropAttachment(att Attachment, keepChain bool) bool {
	chain := DNATChainName(att.Network, att.ContainerID)
	if !p.t.chains[chain] {
		return false
	}
	n := len(p.lines)
	mine := func(r rule) bool { return (r.chain == chain || r.target == chain) && owned(att, r) }
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
	for _, i := range p.live(func(r rule) bool { return r.chain == chain || r.target == chain }) {
		p.del(i)
	}
	delete(p.t.chains, chain)
	p.emit("-X " + chain)
}

// dropOldSNAT removes the chain of reference releases before v0.7.
func (p *plan) dropOldSNAT(att Attachment) {
	if c := hashedChain(oldSNATPrefix, att.Network, att.ContainerID); p.t.chains[c] {
		p.removeChain(c)
	}
}

// teardownShared removes the shared chains once nothing uses them, so that
// a node without port mappings has none of our rules. -X fails if another
// process added a rule or a jump since the read, which aborts the
// transaction instead of breaking that process's mapping.
func (p *plan) teardownShared() {
	if p.t.chains[HostPortDNATChain] && len(p.live(inChain(HostPortDNATChain))) == 0 {
		p.removeChain(HostPortDNATChain)
	}
	if len(p.live(jumpsTo(HostPortMarkChain))) > 0 {
		return
	}
	for _, c := range []string{HostPortMarkChain, HostPortMasqChain} {
		if p.t.chains[c] {
			p.removeChain(c)
		}
	}
}

// staleAttachments lists the attachments of network with rules in the
// table that valid rejects, from the tags of rules in or jumping to their
// chain (a tag on any other chain is not ours).
func staleAttachments(t *natTable, network string, valid Valid) []Attachment {
	var out []Attachment
	for _, r := range t.rules {
		a, ok := ParseTag(r.comment)
		if !ok || a.Network != network || slices.Contains(out, a) {
			continue
		}
		chain := DNATChainName(a.Network, a.ContainerID)
		if (r.chain == chain || r.target == chain) && !valid(a.ContainerID, a.IfName) {
			out = append(out, a)
		}
	}
	return out
}

// restoreFailedLine reads the number of the line iptables-restore
// rejected, counted from the first line after "*nat", or -1.
func restoreFailedLine(msg string) int {
	_, rest, ok := strings.Cut(msg, "line ")
	if !ok {
		return -1
	}
	n := 0
	i := 0
	for ; i < len(rest) && rest[i] >= '0' && rest[i] <= '9'; i++ {
		n = n*10 + int(rest[i]-'0')
	}
	if i == 0 {
		return -1
	}
	return n - 2
}
