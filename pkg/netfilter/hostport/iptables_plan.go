package hostport

import (
	"slices"

	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// plan is an iptables.Plan of the nat table with the port mappings'
// chains in view.
type plan struct{ *iptables.Plan }

func newPlan(t *iptables.Table) *plan { return &plan{iptables.NewPlan(t)} }

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

// ensurePlumbing adds whatever part of the shared chains r relies on is
// missing. A rule that is there with other matches (an operator's, or
// another release's) counts as there, as in the reference.
func (p *plan) ensurePlumbing(r iptRules) {
	p.EnsureChain(hostPortDNATChain)
	for _, c := range []string{"PREROUTING", "OUTPUT"} {
		if len(p.Live(func(x iptables.Rule) bool { return x.Chain == c && x.Target == hostPortDNATChain })) == 0 {
			p.Append(c, dstLocalSpec)
		}
	}
	if !r.ownMasq {
		return
	}
	p.EnsureChain(hostPortMarkChain)
	if len(p.Live(func(x iptables.Rule) bool {
		return x.Chain == hostPortMarkChain && hasArg(x.Spec, "--set-xmark", r.mark)
	})) == 0 {
		p.Append(hostPortMarkChain, markRuleSpec(r.mark))
	}
	p.EnsureChain(hostPortMasqChain)
	if len(p.Live(func(x iptables.Rule) bool {
		return x.Chain == hostPortMasqChain && x.Target == "MASQUERADE" && hasArg(x.Spec, "--mark", r.mark)
	})) == 0 {
		p.Append(hostPortMasqChain, masqRuleSpec(r.mark))
	}
	if len(p.Live(func(x iptables.Rule) bool { return x.Chain == "POSTROUTING" && x.Target == hostPortMasqChain })) == 0 {
		// First in POSTROUTING: the bridge's masquerade chains ACCEPT
		// traffic within the pod subnet, which hairpin traffic is.
		p.Emit("-I POSTROUTING 1 " + masqJumpSpec())
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
	if !p.T.Chains[chain] {
		return false
	}
	n := len(p.Lines)
	mine := func(r iptables.Rule) bool { return (r.Chain == chain || r.Target == chain) && owned(att, r) }
	for _, i := range p.Live(mine) {
		p.Del(i)
	}
	if !keepChain && len(p.Live(iptables.InChain(chain))) == 0 {
		p.removeChain(chain)
	}
	return len(p.Lines) > n
}

// removeChain deletes every rule in and every jump to chain, then chain.
func (p *plan) removeChain(chain string) {
	for _, i := range p.Live(func(r iptables.Rule) bool { return r.Chain == chain || r.Target == chain }) {
		p.Del(i)
	}
	delete(p.T.Chains, chain)
	p.Emit("-X " + chain)
}

// dropOldSNAT removes the chain of reference releases before v0.7.
func (p *plan) dropOldSNAT(att Attachment) {
	if c := hashedChain(oldSNATPrefix, att.Network, att.ContainerID); p.T.Chains[c] {
		p.removeChain(c)
	}
}

// teardownShared removes the shared chains once nothing uses them, so that
// a node without port mappings has none of our rules. -X fails if another
// process added a rule or a jump since the read, which aborts the
// transaction instead of breaking that process's mapping.
func (p *plan) teardownShared() {
	if p.T.Chains[hostPortDNATChain] && len(p.Live(iptables.InChain(hostPortDNATChain))) == 0 {
		p.removeChain(hostPortDNATChain)
	}
	if len(p.Live(iptables.JumpsTo(hostPortMarkChain))) > 0 {
		return
	}
	for _, c := range []string{hostPortMarkChain, hostPortMasqChain} {
		if p.T.Chains[c] {
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
