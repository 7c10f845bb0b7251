package nat

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// FlannelHost applies, checks and removes flanneld's host rules through
// iptables-save and iptables-restore: one save to read a family, one
// restore to change it atomically.
type FlannelHost struct {
	Run Runner // nil: the real binaries
}

func (h FlannelHost) runner() Runner { return Masq(h).runner() }

// flannelTables is one family's iptables-save, by table.
type flannelTables map[string]*natTable

func (h FlannelHost) read(ctx context.Context, f family) (flannelTables, error) {
	out, err := h.runner().Run(ctx, "", f.save())
	if err != nil {
		if ee := (*exec.Error)(nil); errors.As(err, &ee) {
			return nil, fmt.Errorf("%s: %w", f.save(), ErrNotInstalled)
		}
		return nil, fmt.Errorf("reading the rules with %s: %w", f.save(), err)
	}
	tables := flannelTables{}
	var name string
	var section strings.Builder
	for line := range strings.Lines(out) {
		switch t := strings.TrimSpace(line); {
		case strings.HasPrefix(t, "*"):
			name = t[1:]
			section.Reset()
		case t == "COMMIT":
			tables[name] = parseSave(section.String())
		default:
			section.WriteString(line)
		}
	}
	return tables, nil
}

func (t flannelTables) table(name string) *natTable {
	if nt, ok := t[name]; ok {
		return nt
	}
	return &natTable{chains: map[string]bool{}} // a table nobody has used yet
}

// flannelChainRules lists the specs of chain's rules in order.
func flannelChainRules(nt *natTable, chain string) []string {
	var specs []string
	for _, r := range nt.rules {
		if r.chain == chain {
			specs = append(specs, r.spec)
		}
	}
	return specs
}

// ErrRandomFullyUnsupported says iptables or the kernel refused
// --random-fully; set FlannelRules.NoRandomFully.
var ErrRandomFullyUnsupported = errors.New("this iptables or kernel does not support MASQUERADE --random-fully; turn fully random masquerading off")

// Apply makes the rules of every family match r, reading each family with
// one iptables-save and writing it with one iptables-restore --noflush over
// nat and filter, so that no packet sees half a rule set. Applying twice
// leaves the same rules; Apply(FlannelRules{}) removes them all.
func (h FlannelHost) Apply(ctx context.Context, r FlannelRules) error {
	_, err := h.each(ctx, r, func([]string) bool { return true })
	return err
}

// Check lists how the rules differ from r, one line per difference, without
// changing anything: one iptables-save per family, no fork per rule.
func (h FlannelHost) Check(ctx context.Context, r FlannelRules) ([]string, error) {
	return h.each(ctx, r, func([]string) bool { return false })
}

// Ensure repairs what Check would report and returns it: a family whose
// rules are intact costs one iptables-save and no write, so the daemon can
// run it periodically.
func (h FlannelHost) Ensure(ctx context.Context, r FlannelRules) ([]string, error) {
	return h.each(ctx, r, func(drift []string) bool { return len(drift) > 0 })
}

// Teardown removes flanneld's chains and the jumps to them in both
// families, whoever made them (subnetd --cleanup). It is idempotent.
func (h FlannelHost) Teardown(ctx context.Context) error {
	return h.Apply(ctx, FlannelRules{})
}

func (r FlannelRules) wants(f family) bool {
	_, ok := r.netOf(f)
	return ok && (r.Masq || r.Forward)
}

// each reads each family, lists its drift and, when rewrite says so,
// restores the family's chains. A family without iptables is skipped when
// it should hold no rule.
func (h FlannelHost) each(ctx context.Context, r FlannelRules, rewrite func([]string) bool) ([]string, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	var drift []string
	var errs []error
	for _, f := range families {
		t, err := h.read(ctx, f)
		if errors.Is(err, ErrNotInstalled) && !r.wants(f) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		chains := r.chains(f)
		d := flannelDrift(f, t, chains)
		drift = append(drift, d...)
		if rewrite(d) {
			errs = append(errs, h.restore(ctx, f, flannelPayload(t, chains)))
		}
	}
	return drift, errors.Join(errs...)
}

// flannelDrift compares one family's tables with the wanted chains.
func flannelDrift(f family, t flannelTables, chains []flannelChain) []string {
	name := "IPv4"
	if f.v6 {
		name = "IPv6"
	}
	var drift []string
	for _, c := range chains {
		nt := t.table(c.table)
		where := fmt.Sprintf("%s %s %s", name, c.table, c.name)
		jumps := nt.deleteJumps(c.name)
		switch {
		case c.rules == nil && (nt.chains[c.name] || len(jumps) > 0):
			drift = append(drift, where+": present but not wanted")
		case c.rules == nil:
		case !nt.chains[c.name]:
			drift = append(drift, where+": missing")
		case !slices.Equal(flannelChainRules(nt, c.name), c.rules):
			drift = append(drift, fmt.Sprintf("%s: rules differ (%d found, %d wanted)", where, len(flannelChainRules(nt, c.name)), len(c.rules)))
		}
		if c.rules != nil && !slices.Equal(jumps, []string{"-D " + c.parent + " " + c.jump}) {
			drift = append(drift, fmt.Sprintf("%s: %d jumps from %s, want exactly one", where, len(jumps), c.parent))
		}
	}
	return drift
}

// flannelPayload is the restore input that turns t into the wanted chains:
// a wanted chain is declared (which flushes it) and refilled, its jump kept
// when it is the only one and rewritten otherwise; an unwanted chain and
// its jumps are removed.
func flannelPayload(t flannelTables, chains []flannelChain) map[string][]string {
	lines := map[string][]string{}
	for _, c := range chains {
		nt := t.table(c.table)
		if c.rules == nil {
			if rm := nt.removeChain(c.name); len(rm) > 0 {
				lines[c.table] = append(lines[c.table], rm...)
			}
			continue
		}
		l := []string{":" + c.name + " - [0:0]"}
		if jumps := nt.deleteJumps(c.name); !slices.Equal(jumps, []string{"-D " + c.parent + " " + c.jump}) {
			l = append(append(l, jumps...), "-A "+c.parent+" "+c.jump)
		}
		for _, spec := range c.rules {
			l = append(l, "-A "+c.name+" "+spec)
		}
		lines[c.table] = append(lines[c.table], l...)
	}
	return lines
}

// restore commits one family's lines, all tables in one transaction.
func (h FlannelHost) restore(ctx context.Context, f family, lines map[string][]string) error {
	var payload strings.Builder
	for _, table := range []string{"nat", "filter"} {
		if len(lines[table]) > 0 {
			fmt.Fprintf(&payload, "*%s\n%s\nCOMMIT\n", table, strings.Join(lines[table], "\n"))
		}
	}
	if payload.Len() == 0 {
		return nil
	}
	_, err := h.runner().Run(ctx, payload.String(), f.restore(), "--noflush", "-w", "10")
	switch {
	case lockHeld(err) != nil:
		return lockHeld(err)
	case err != nil && strings.Contains(err.Error(), "random-fully"):
		return fmt.Errorf("applying flannel's host rules: %w: %w", ErrRandomFullyUnsupported, err)
	case err != nil:
		return fmt.Errorf("applying flannel's host rules: %w", err)
	}
	return nil
}
