package nat

import (
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// nftMasqTeardown removes an attachment's masquerade chain in one family
// without running iptables: over netlink, in one nft transaction, the
// jumps to it from POSTROUTING, its rules and the chain go, and a family
// without the chain costs one dump. It returns false when it cannot or
// should not decide, leaving the teardown to iptables-save and -restore:
// the legacy x_tables nat table is in use (netlink does not see its
// rules), the chain holds a rule without the attachment's comment, or the
// table changed under the plan (the transaction fails as a whole).
func nftMasqTeardown(v6 bool, chain, comment string) bool {
	conn, table, ok := dialNAT(v6)
	if !ok {
		return false
	}
	defer conn.Close()
	var del []*nftables.Rule
	var own *nftables.Chain
	err := conn.Stable(func() (err error) { own, del, err = planMasqTeardown(conn, table, chain, comment); return err })
	switch {
	case err != nil:
		return false
	case own == nil:
		return del == nil // no chain: nothing to remove
	}
	for _, r := range del {
		if err := conn.DelRule(r); err != nil {
			return false
		}
	}
	conn.DelChain(own)
	return conn.Flush() == nil
}

// planMasqTeardown reads what the teardown removes: the chain (nil when
// absent, with del nil; or when the teardown is left to iptables, with del
// non-nil), and the rules, the jumps first. It changes nothing.
func planMasqTeardown(conn *NFTConn, table *nftables.Table, chain, comment string) (*nftables.Chain, []*nftables.Rule, error) {
	names, err := conn.DumpChains(table)
	if err != nil || !slices.Contains(names, chain) {
		return nil, nil, err
	}
	own := &nftables.Chain{Name: chain, Table: table}
	rules, err := conn.GetRules(table, own)
	if err != nil {
		return nil, nil, err
	}
	if slices.ContainsFunc(rules, func(r *nftables.Rule) bool { return xtComment(r) != comment }) {
		return nil, []*nftables.Rule{}, nil
	}
	jumps, _, err := jumpsInto(conn, &nftables.Chain{Name: "POSTROUTING", Table: table}, chain)
	if err != nil {
		return nil, nil, err
	}
	return own, slices.Concat(jumps, rules), nil
}

// xtComment is a rule's comment match as iptables-nft stores it; "" for
// none.
func xtComment(r *nftables.Rule) string {
	for _, e := range r.Exprs {
		if m, ok := e.(*expr.Match); ok && m.Name == "comment" {
			if c, ok := m.Info.(*xt.Comment); ok {
				return string(*c)
			}
		}
	}
	return ""
}
