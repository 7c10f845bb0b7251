// Package leftovers finds and removes every rule of the suite on a node,
// whoever made it and whether a pod still uses it, for `cnictl reset`: the
// iptables chains (one iptables-restore per family) and the nftables
// tables (one transaction) that hostport, masq, hostrules and podfilter
// own, which it asks them to recognise. Unlike their DEL, GC and teardown
// it does not ask whose a rule is. Under pkg/netfilter it imports those
// four, iptables and nftconn; it must not import a plugin, the daemon,
// pkg/subnet or pkg/overlay.
package leftovers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/hostport"
	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
	"github.com/cnisuite/cni/pkg/netfilter/podfilter"
)

// suiteChain tells whether a chain of table is one the suite (or the
// reference plugins and flanneld, whose names it shares) makes: the bridge's
// masquerade chains, portmap's shared and per-attachment chains (also those
// of reference releases before v0.7), subnetd's two chains and the
// firewall's.
func suiteChain(table, chain string) bool {
	return masq.OwnsChain(table, chain) || hostport.OwnsChain(table, chain) || hostrules.OwnsChain(table, chain) ||
		podfilter.OwnsChain(table, chain)
}

// Chain is one chain of the suite found in a node's rules.
type Chain struct {
	Family family.Family
	Table  string   // nat or filter
	Chain  string   // e.g. CNI-HOSTPORT-DNAT
	Rules  int      // rules in the chain
	From   []string // the other chains that jump to it, one entry per jump
}

func (l Chain) String() string {
	plural := "s"
	if l.Rules == 1 {
		plural = ""
	}
	s := fmt.Sprintf("%s -t %s chain %s (%d rule%s", l.Family.IPTables(), l.Table, l.Chain, l.Rules, plural)
	if len(l.From) > 0 {
		s += ", jumps from " + strings.Join(l.From, ", ")
	}
	return s + ")"
}

// ResetIPTables removes every chain of the suite, and the jumps to them,
// from both families, one iptables-restore per family run with run (nil:
// the real binaries); with dryRun it only reads. It returns what it
// found. A family without iptables is skipped.
func ResetIPTables(ctx context.Context, run iptables.Runner, dryRun bool) ([]Chain, error) {
	var found []Chain
	var errs []error
	for _, f := range family.All() {
		t, err := iptables.Save(ctx, run, f, "")
		if errors.Is(err, iptables.ErrNotInstalled) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		left, lines := resetPlan(f, t)
		found = append(found, left...)
		if dryRun {
			continue
		}
		if err := iptables.Restore(ctx, run, f, lines); err != nil {
			errs = append(errs, fmt.Errorf("removing the suite's %s chains: %w", f.IPTables(), err))
		}
	}
	return found, errors.Join(errs...)
}

// resetPlan lists one family's suite chains and the restore lines that
// remove them: every chain is declared first (which flushes it, and with it
// the jumps between suite chains), then the jumps from other chains go, then
// the chains.
func resetPlan(f family.Family, t iptables.Tables) ([]Chain, map[string][]string) {
	var left []Chain
	lines := map[string][]string{}
	for _, table := range []string{"nat", "filter"} {
		nt := t.Get(table)
		var mine []string
		for c := range nt.Chains {
			if suiteChain(table, c) {
				mine = append(mine, c)
			}
		}
		slices.Sort(mine)
		var decl, jumps, drop []string
		for _, c := range mine {
			l := Chain{Family: f, Table: table, Chain: c}
			for _, r := range nt.Rules {
				switch {
				case r.Chain == c:
					l.Rules++
				case r.Target == c && !suiteChain(table, r.Chain):
					l.From = append(l.From, r.Chain)
					jumps = append(jumps, "-D "+r.Chain+" "+r.Spec)
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
