package hostport

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// The shared plumbing, in the reference's words, so that rules made by
// either implementation are found by the other.
const (
	dstLocalSpec    = "-m addrtype --dst-type LOCAL -j " + hostPortDNATChain
	masqJumpComment = "CNI portfwd requiring masquerade"
	markComment     = "CNI portfwd masquerade mark"
	// multiport takes at most 15 ports per rule.
	maxMultiport = 15
)

// iptRules is the iptables text of one attachment's rules in one family:
// rule specifications without the leading "-A <chain>".
type iptRules struct {
	chain   string   // CNI-DN-<hash>
	rules   []string // in chain: mark and DNAT rules per mapping
	entries []string // in CNI-HOSTPORT-DNAT: jumps to chain per protocol
	// ownMasq: CNI-HOSTPORT-SETMARK and -MASQ are needed (snat without an
	// external mark chain); mark is their "value/mask".
	ownMasq bool
	mark    string
}

// iptablesRules renders the plan of the attachment's rules for one
// container address in the reference's iptables rules.
func iptablesRules(c *Conf, container netip.Prefix) iptRules {
	addr := container.Addr()
	tag := iptables.Quote(c.tag())
	r := iptRules{
		chain:   dnatChainName(c.Network, c.ContainerID),
		ownMasq: c.SNAT && c.ExternalSetMarkChain == "",
		mark:    fmt.Sprintf("%#x/%#x", c.markValue(), c.markValue()),
	}
	markChain := hostPortMarkChain
	if c.ExternalSetMarkChain != "" {
		markChain = c.ExternalSetMarkChain
	}
	steps, hairpin := c.plan(container)
	for _, s := range steps {
		base := "-m comment --comment " + tag + " -p " + s.Protocol + " --dport " + strconv.Itoa(int(s.HostPort))
		if s.boundToHostIP() {
			base += " -d " + s.HostIP.String()
		}
		switch s.kind {
		case markHairpin:
			r.rules = append(r.rules, base+" -s "+hairpin.String()+" -j "+markChain)
		case markLocalhost:
			r.rules = append(r.rules, base+" -s 127.0.0.1 -j "+markChain)
		case forward:
			r.rules = append(r.rules, base+" -j DNAT --to-destination "+netip.AddrPortFrom(addr, s.ContainerPort).String())
		}
	}
	r.entries = entryRules(tag, c.MapsFor(addr), c.Conditions[family.Of(addr)], r.chain)
	return r
}

// entryRules jumps from CNI-HOSTPORT-DNAT to the attachment's chain for its
// host ports only, one rule per protocol and 15 ports, in the protocols'
// alphabetical order as the reference.
func entryRules(tag string, maps []PortMap, conds []string, chain string) []string {
	ports := map[string][]string{}
	for _, m := range maps {
		p := strconv.Itoa(int(m.HostPort))
		if !slices.Contains(ports[m.Protocol], p) {
			ports[m.Protocol] = append(ports[m.Protocol], p)
		}
	}
	protos := make([]string, 0, len(ports))
	for p := range ports {
		protos = append(protos, p)
	}
	slices.Sort(protos)
	cond := ""
	for _, tok := range conds {
		cond += " " + quoteArg(tok)
	}
	var out []string
	for _, proto := range protos {
		for chunk := range slices.Chunk(ports[proto], maxMultiport) {
			out = append(out, "-m comment --comment "+tag+" -m multiport -p "+proto+
				" --destination-ports "+strings.Join(chunk, ",")+cond+" -j "+chain)
		}
	}
	return out
}

// quoteArg quotes a user-given iptables argument only when the restore
// parser would otherwise split or unescape it.
func quoteArg(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"\\'") {
		return iptables.Quote(s)
	}
	return s
}

func markRuleSpec(mark string) string {
	return "-m comment --comment " + iptables.Quote(markComment) + " -j MARK --set-xmark " + mark
}

func masqRuleSpec(mark string) string {
	return "-m mark --mark " + mark + " -j MASQUERADE"
}

func masqJumpSpec() string {
	return "-m comment --comment " + iptables.Quote(masqJumpComment) + " -j " + hostPortMasqChain
}

// plumbing lists the shared rules that r relies on, as "<chain> <spec>".
func (r iptRules) plumbing() [][2]string {
	out := [][2]string{{"PREROUTING", dstLocalSpec}, {"OUTPUT", dstLocalSpec}}
	if r.ownMasq {
		out = append(out,
			[2]string{"POSTROUTING", masqJumpSpec()},
			[2]string{hostPortMarkChain, markRuleSpec(r.mark)},
			[2]string{hostPortMasqChain, masqRuleSpec(r.mark)})
	}
	return out
}

// fastLines adds r in one transaction that asserts, rather than reads,
// what it relies on: the shared plumbing is there (-C) and the
// attachment has no chain yet (-N). Any surprise aborts the whole
// transaction, and the caller falls back to reading the table.
func (r iptRules) fastLines() []string {
	var lines []string
	for _, p := range r.plumbing() {
		lines = append(lines, "-C "+p[0]+" "+p[1])
	}
	lines = append(lines, "-N "+r.chain)
	return append(lines, r.appendLines()...)
}

func (r iptRules) appendLines() []string {
	return append(ops("-A", r.chain, r.rules), ops("-A", hostPortDNATChain, r.entries)...)
}

// ops makes one restore line of op per rule specification of chain.
func ops(op, chain string, specs []string) []string {
	lines := make([]string, len(specs))
	for i, s := range specs {
		lines[i] = op + " " + chain + " " + s
	}
	return lines
}

// all lists every rule of r and of the plumbing it relies on, as
// "<chain> <spec>".
func (r iptRules) all() [][2]string {
	out := r.plumbing()
	for _, s := range r.rules {
		out = append(out, [2]string{r.chain, s})
	}
	for _, s := range r.entries {
		out = append(out, [2]string{hostPortDNATChain, s})
	}
	return out
}
