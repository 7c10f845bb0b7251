package hostrules

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// flanneld's nftables layout (its EnableNFTables mode): a table per family,
// each with a nat base chain for masquerading and a filter base chain
// accepting forwarded cluster traffic. The names are flanneld's, so a node
// moving between flanneld and subnetd finds and replaces the other's rules,
// and an operator reads them where flannel's documentation says they are.
var nftTableNames = [2]string{family.IPv4: "flannel-ipv4", family.IPv6: "flannel-ipv6"}

// NFTTable is the nftables backend's table of family f.
func NFTTable(f family.Family) *nftables.Table {
	return &nftables.Table{Name: nftTableNames[f], Family: nftconn.TableFamily(f)}
}

// nftChain is the base chain of kind k in table t.
func nftChain(t *nftables.Table, k chainKind) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	if k == masqChain {
		return &nftables.Chain{Name: "postrtg", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &policy}
	}
	return &nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy}
}

// NFTables applies, checks and removes the host rules as nftables, over
// netlink: every change of both families is one transaction, which the
// kernel applies whole or not at all.
type NFTables struct{}

// nftWant is a base chain of the layout and its rules; rules is nil for a
// chain that should not exist.
type nftWant struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

// nftChains renders r's rules of family f into both base chains.
func (r Rules) nftChains(f family.Family) []nftWant {
	rules := r.rules(f)
	out := make([]nftWant, len(rules))
	for k := range rules {
		out[k].chain = nftChain(NFTTable(f), chainKind(k))
		for _, x := range rules[k] {
			out[k].rules = append(out[k].rules, x.exprs())
		}
	}
	return out
}

// exprs is the rule as nftables expressions.
func (x rule) exprs() []expr.Any {
	var out []expr.Any
	if x.marked {
		out = nftconn.HasMark(kubeProxyMark)
	}
	if x.src.p.IsValid() {
		out = append(out, nftconn.AddrMatch(nftconn.Saddr, x.src.p, x.src.not)...)
	}
	if x.dst.p.IsValid() {
		out = append(out, nftconn.AddrMatch(nftconn.Daddr, x.dst.p, x.dst.not)...)
	}
	switch x.verdict {
	case masquerade:
		return append(out, &expr.Masq{FullyRandom: x.fullyRandom})
	case accept:
		return append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	}
	return append(out, &expr.Verdict{Kind: expr.VerdictReturn})
}

// Apply makes both families' tables match r in one transaction; applying
// twice leaves the same rules, Apply(Rules{}) removes the tables.
func (h NFTables) Apply(ctx context.Context, r Rules) error {
	_, err := h.each(r, func([]string) bool { return true })
	return err
}

// Check lists how the tables differ from r, one line per difference,
// without changing anything.
func (h NFTables) Check(ctx context.Context, r Rules) ([]string, error) {
	return h.each(r, func([]string) bool { return false })
}

// Ensure repairs what Check would report and returns it; intact tables
// cost one read and no write.
func (h NFTables) Ensure(ctx context.Context, r Rules) ([]string, error) {
	return h.each(r, func(drift []string) bool { return len(drift) > 0 })
}

// Teardown removes both tables, whoever made them (flanneld too).
func (h NFTables) Teardown(ctx context.Context) error {
	return h.Apply(ctx, Rules{})
}

// each reads both families, lists their drift and, when rewrite says so,
// replaces each drifted family's table in one transaction: the table is
// deleted and made again, so no packet sees half a rule set and a chain
// someone changed the hook or priority of is made right.
func (h NFTables) each(r Rules, rewrite func([]string) bool) ([]string, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	conn, err := nftconn.Dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var drift []string
	var queued bool
	for _, f := range family.All() {
		chains := r.nftChains(f)
		found, err := readNFT(conn, f)
		if err != nil {
			return nil, err
		}
		d := nftDrift(f, found, chains)
		drift = append(drift, d...)
		if rewrite(d) {
			queueNFT(conn, f, found != nil, chains)
			queued = true
		}
	}
	if queued {
		if err := conn.Flush(); err != nil {
			return drift, fmt.Errorf("applying flannel's host rules (nftables): %w", err)
		}
	}
	return drift, nil
}

// nftFound is one family's table as read: its chains and their rules.
type nftFound map[string]foundChain

type foundChain struct {
	chain *nftables.Chain
	rules []*nftables.Rule
}

// readNFT reads f's table; nil when there is none.
func readNFT(conn *nftconn.Conn, f family.Family) (nftFound, error) {
	t := NFTTable(f)
	tables, err := conn.ListTablesOfFamily(t.Family)
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name }) {
		return nil, nil
	}
	chains, err := conn.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	found := nftFound{}
	for _, c := range chains {
		if c.Table.Name != t.Name {
			continue
		}
		rules, err := conn.GetRules(t, c)
		if err != nil {
			return nil, fmt.Errorf("listing the rules of %s %s: %w", t.Name, c.Name, err)
		}
		found[c.Name] = foundChain{chain: c, rules: rules}
	}
	return found, nil
}

// nftDrift compares one family's table (nil: none) with the wanted chains.
func nftDrift(f family.Family, found nftFound, want []nftWant) []string {
	t := NFTTable(f)
	table := fmt.Sprintf("%s nftables %s %s", f, nftconn.FamilyName(t.Family), t.Name)
	if !wantsAny(want) {
		if found != nil {
			return []string{table + ": present but not wanted"}
		}
		return nil
	}
	var drift []string
	for _, w := range want {
		where := table + " " + w.chain.Name
		got, ok := found[w.chain.Name]
		switch {
		case w.rules == nil && ok:
			drift = append(drift, where+": present but not wanted")
		case w.rules == nil:
		case !ok:
			drift = append(drift, where+": missing")
		case !sameHook(got.chain, w.chain):
			drift = append(drift, where+": not the base chain it should be (type, hook, priority or policy)")
		case !sameRules(f, got.rules, w.rules):
			drift = append(drift, fmt.Sprintf("%s: rules differ (%d found, %d wanted)", where, len(got.rules), len(w.rules)))
		}
	}
	for c := range found {
		if !slices.ContainsFunc(want, func(w nftWant) bool { return w.chain.Name == c }) {
			drift = append(drift, table+" "+c+": present but not wanted")
		}
	}
	return drift
}

func wantsAny(want []nftWant) bool {
	return slices.ContainsFunc(want, func(w nftWant) bool { return w.rules != nil })
}

func sameHook(a, b *nftables.Chain) bool {
	return a.Type == b.Type && a.Hooknum != nil && *a.Hooknum == *b.Hooknum &&
		a.Priority != nil && *a.Priority == *b.Priority && a.Policy != nil && *a.Policy == *b.Policy
}

func sameRules(f family.Family, got []*nftables.Rule, want [][]expr.Any) bool {
	if len(got) != len(want) {
		return false
	}
	for i, r := range got {
		if !nftconn.SameExprs(f, r.Exprs, want[i]) {
			return false
		}
	}
	return true
}

// queueNFT queues the replacement of f's table by the wanted chains; a
// family that wants none is left without a table.
func queueNFT(conn *nftconn.Conn, f family.Family, exists bool, want []nftWant) {
	t := NFTTable(f)
	if exists {
		conn.DelTable(t)
	}
	if !wantsAny(want) {
		return
	}
	conn.AddTable(t)
	for _, w := range want {
		if w.rules == nil {
			continue
		}
		conn.AddChain(w.chain)
		for _, e := range w.rules {
			conn.AddRule(&nftables.Rule{Table: t, Chain: w.chain, Exprs: e})
		}
	}
}
