package nat

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// masqChainRE matches the name ChainName gives: "CNI-" and 24 hex digits.
// portmap's CNI-DN- chains do not match ("DN-" is not hex).
var masqChainRE = regexp.MustCompile(`^CNI-[0-9a-f]{24}$`)

// suiteChain tells whether a chain of table is one the suite (or the
// reference plugins and flanneld, whose names it shares) makes: the bridge's
// masquerade chains, portmap's shared and per-attachment chains (also those
// of reference releases before v0.7), and subnetd's two chains.
func suiteChain(table, chain string) bool {
	switch table {
	case "nat":
		return masqChainRE.MatchString(chain) ||
			slices.Contains([]string{HostPortDNATChain, HostPortMarkChain, HostPortMasqChain, FlannelMasqChain}, chain) ||
			strings.HasPrefix(chain, "CNI-DN-") || strings.HasPrefix(chain, oldSNATPrefix)
	case "filter":
		return chain == FlannelForwardChain
	}
	return false
}

// Leftover is one chain of the suite found in a node's rules.
type Leftover struct {
	Tool  string   // iptables or ip6tables
	Table string   // nat or filter
	Chain string   // e.g. CNI-HOSTPORT-DNAT
	Rules int      // rules in the chain
	From  []string // the other chains that jump to it, one entry per jump
}

func (l Leftover) String() string {
	plural := "s"
	if l.Rules == 1 {
		plural = ""
	}
	s := fmt.Sprintf("%s -t %s chain %s (%d rule%s", l.Tool, l.Table, l.Chain, l.Rules, plural)
	if len(l.From) > 0 {
		s += ", jumps from " + strings.Join(l.From, ", ")
	}
	return s + ")"
}

// Reset removes every chain suiteChain names, and the jumps to them, from
// both families, one iptables-restore per family; with dryRun it only
// reads. It returns what it found. A family without iptables is skipped.
// It is for `cnictl reset`: unlike Teardown and GC it does not ask whose a
// chain is, so it also takes the rules of pods still running.
func Reset(ctx context.Context, run Runner, dryRun bool) ([]Leftover, error) {
	h := FlannelHost{Run: run}
	var found []Leftover
	var errs []error
	for _, f := range families {
		t, err := h.read(ctx, f)
		if errors.Is(err, ErrNotInstalled) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		left, lines := resetPlan(f, t)
		found = append(found, left...)
		if !dryRun {
			errs = append(errs, h.restore(ctx, f, lines))
		}
	}
	return found, errors.Join(errs...)
}

// resetPlan lists one family's suite chains and the restore lines that
// remove them: every chain is declared first (which flushes it, and with it
// the jumps between suite chains), then the jumps from other chains go, then
// the chains.
func resetPlan(f family, t flannelTables) ([]Leftover, map[string][]string) {
	var left []Leftover
	lines := map[string][]string{}
	for _, table := range []string{"nat", "filter"} {
		nt := t.table(table)
		var mine []string
		for c := range nt.chains {
			if suiteChain(table, c) {
				mine = append(mine, c)
			}
		}
		slices.Sort(mine)
		var decl, jumps, drop []string
		for _, c := range mine {
			l := Leftover{Tool: f.tool(), Table: table, Chain: c}
			for _, r := range nt.rules {
				switch {
				case r.chain == c:
					l.Rules++
				case r.target == c && !suiteChain(table, r.chain):
					l.From = append(l.From, r.chain)
					jumps = append(jumps, "-D "+r.chain+" "+r.spec)
				}
			}
			left = append(left, l)
			decl, drop = append(decl, ":"+c+" - [0:0]"), append(drop, "-X "+c)
		}
		if len(mine) > 0 {
			lines[table] = slices.Concat(decl, jumps, drop)
		}
	}
	return left, lines
}
