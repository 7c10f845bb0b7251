package hostrules

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// iptChain is where one of flanneld's chains hangs, and its rules'
// comment.
type iptChain struct {
	table, parent, name, comment string
}

var iptChains = [2]iptChain{
	masqChain:    {"nat", "POSTROUTING", "FLANNEL-POSTRTG", "flanneld masq"},
	forwardChain: {"filter", "FORWARD", "FLANNEL-FWD", "flanneld forward"},
}

// OwnsChain tells whether chain of an iptables table is one of the host
// rules' chains, for `cnictl reset`.
func OwnsChain(table, chain string) bool {
	return slices.ContainsFunc(iptChains[:], func(c iptChain) bool { return c.table == table && c.name == chain })
}

// IPTables applies, checks and removes the host rules through
// iptables-save and iptables-restore: one save to read a family, one
// restore to change it atomically.
type IPTables struct {
	Run iptables.Runner // nil: the real binaries
}

// iptWant is one chain as a family wants it: its rules as iptables-save
// prints them (the form Check compares with), nil when the chain should
// not exist.
type iptWant struct {
	iptChain
	rules []string
}

// jump is the parent's rule spec jumping to the chain.
func (c iptChain) jump() string {
	return "-m comment --comment " + iptables.Quote(c.comment) + " -j " + c.name
}

// iptablesChains renders r's rules of family f into both chains.
func (r Rules) iptablesChains(f family.Family) []iptWant {
	rules := r.rules(f)
	out := make([]iptWant, len(iptChains))
	for k, c := range iptChains {
		out[k].iptChain = c
		for _, x := range rules[k] {
			out[k].rules = append(out[k].rules, x.iptables(c.comment))
		}
	}
	return out
}

// iptables is the rule spec: matches, comment and target in the order
// iptables-save prints them.
func (x rule) iptables(comment string) string {
	var parts []string
	if x.marked {
		parts = append(parts, fmt.Sprintf("-m mark --mark %#x/%#x", kubeProxyMark, kubeProxyMark))
	}
	for _, m := range []struct {
		flag string
		addrMatch
	}{{"-s", x.src}, {"-d", x.dst}} {
		switch {
		case !m.p.IsValid():
		case m.not:
			parts = append(parts, "! "+m.flag+" "+m.p.String())
		default:
			parts = append(parts, m.flag+" "+m.p.String())
		}
	}
	return strings.Join(append(parts, "-m comment --comment "+iptables.Quote(comment), x.target()), " ")
}

func (x rule) target() string {
	switch {
	case x.verdict == accept:
		return "-j ACCEPT"
	case x.verdict == ret:
		return "-j RETURN"
	case x.fullyRandom:
		return "-j MASQUERADE --random-fully"
	}
	return "-j MASQUERADE"
}

// Apply makes the rules of every family match r, reading each family with
// one iptables-save and writing it with one iptables-restore --noflush over
// nat and filter, so that no packet sees half a rule set. Applying twice
// leaves the same rules; Apply(Rules{}) removes them all.
func (h IPTables) Apply(ctx context.Context, r Rules) error {
	_, err := h.each(ctx, r, func([]string) bool { return true })
	return err
}

// Check lists how the rules differ from r, one line per difference, without
// changing anything: one iptables-save per family, no fork per rule.
func (h IPTables) Check(ctx context.Context, r Rules) ([]string, error) {
	return h.each(ctx, r, func([]string) bool { return false })
}

// Ensure repairs what Check would report and returns it: a family whose
// rules are intact costs one iptables-save and no write, so the daemon can
// run it periodically.
func (h IPTables) Ensure(ctx context.Context, r Rules) ([]string, error) {
	return h.each(ctx, r, func(drift []string) bool { return len(drift) > 0 })
}

// Teardown removes flanneld's chains and the jumps to them in both
// families, whoever made them (subnetd --cleanup). It is idempotent.
func (h IPTables) Teardown(ctx context.Context) error {
	return h.Apply(ctx, Rules{})
}

// each reads each family, lists its drift and, when rewrite says so,
// restores the family's chains. A family without iptables is skipped when
// it should hold no rule.
func (h IPTables) each(ctx context.Context, r Rules, rewrite func([]string) bool) ([]string, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	var drift []string
	var errs []error
	for _, f := range family.All() {
		t, err := iptables.Save(ctx, h.Run, f, "")
		if errors.Is(err, iptables.ErrNotInstalled) && !r.wants(f) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		chains := r.iptablesChains(f)
		d := iptablesDrift(f, t, chains)
		drift = append(drift, d...)
		if rewrite(d) {
			errs = append(errs, h.restore(ctx, f, iptablesPayload(t, chains)))
		}
	}
	return drift, errors.Join(errs...)
}

// iptablesDrift compares one family's tables with the wanted chains.
func iptablesDrift(f family.Family, t iptables.Tables, chains []iptWant) []string {
	var drift []string
	for _, c := range chains {
		nt := t.Get(c.table)
		where := fmt.Sprintf("%s %s %s", f, c.table, c.name)
		jumps := nt.DeleteJumps(c.name)
		switch {
		case c.rules == nil && (nt.Chains[c.name] || len(jumps) > 0):
			drift = append(drift, where+": present but not wanted")
		case c.rules == nil:
		case !nt.Chains[c.name]:
			drift = append(drift, where+": missing")
		case !slices.Equal(nt.ChainRules(c.name), c.rules):
			drift = append(drift, fmt.Sprintf("%s: rules differ (%d found, %d wanted)", where, len(nt.ChainRules(c.name)), len(c.rules)))
		}
		if c.rules != nil && !slices.Equal(jumps, []string{"-D " + c.parent + " " + c.jump()}) {
			drift = append(drift, fmt.Sprintf("%s: %d jumps from %s, want exactly one", where, len(jumps), c.parent))
		}
	}
	return drift
}

// iptablesPayload is the restore input that turns t into the wanted
// chains: a wanted chain is declared (which flushes it) and refilled, its
// jump kept when it is the only one and rewritten otherwise; an unwanted
// chain and its jumps are removed.
func iptablesPayload(t iptables.Tables, chains []iptWant) map[string][]string {
	lines := map[string][]string{}
	for _, c := range chains {
		nt := t.Get(c.table)
		if c.rules == nil {
			if rm := nt.RemoveChain(c.name); len(rm) > 0 {
				lines[c.table] = append(lines[c.table], rm...)
			}
			continue
		}
		l := []string{":" + c.name + " - [0:0]"}
		if jumps := nt.DeleteJumps(c.name); !slices.Equal(jumps, []string{"-D " + c.parent + " " + c.jump()}) {
			l = append(append(l, jumps...), "-A "+c.parent+" "+c.jump())
		}
		for _, spec := range c.rules {
			l = append(l, "-A "+c.name+" "+spec)
		}
		lines[c.table] = append(lines[c.table], l...)
	}
	return lines
}

// restore commits one family's lines, all tables in one transaction.
func (h IPTables) restore(ctx context.Context, f family.Family, lines map[string][]string) error {
	err := iptables.Restore(ctx, h.Run, f, lines)
	switch {
	case err == nil || errors.Is(err, iptables.ErrXtablesLock):
		return err
	case strings.Contains(err.Error(), "random-fully"):
		return fmt.Errorf("applying flannel's host rules: %w: %w", ErrRandomFullyUnsupported, err)
	}
	return fmt.Errorf("applying flannel's host rules: %w", err)
}
