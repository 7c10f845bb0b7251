package masq

import (
	"slices"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// nftTeardown removes an attachment's masquerade chain in one family
// without running iptables: over netlink, in one nft transaction, the
// jumps to it from POSTROUTING, its rules and the chain go, and a family
// without the chain costs one dump. It returns false when it cannot or
// should not decide, leaving the teardown to iptables-save and -restore:
// the legacy x_tables nat table is in use (netlink does not see its
// rules), the chain holds a rule without the attachment's comment, or the
// table changed under the plan (the transaction fails as a whole).
func nftTeardown(f family.Family, chain, comment string) bool {
	return nftconn.NATDelete(f, func(conn *nftconn.Conn, table *nftables.Table) (*nftables.Chain, []*nftables.Rule, bool, error) {
		return planTeardown(conn, table, chain, comment)
	})
}

// planTeardown reads what the teardown removes: the chain and its rules,
// the jumps first; no chain when there is none (nothing is true) or when
// the teardown is left to iptables. It changes nothing.
func planTeardown(conn *nftconn.Conn, table *nftables.Table, chain, comment string) (*nftables.Chain, []*nftables.Rule, bool, error) {
	names, err := conn.DumpChains(table)
	if err != nil || !slices.Contains(names, chain) {
		return nil, nil, true, err
	}
	own := &nftables.Chain{Name: chain, Table: table}
	rules, err := conn.GetRules(table, own)
	if err != nil {
		return nil, nil, false, err
	}
	if slices.ContainsFunc(rules, func(r *nftables.Rule) bool { return nftconn.XTComment(r) != comment }) {
		return nil, nil, false, nil
	}
	jumps, _, err := nftconn.JumpsInto(conn, &nftables.Chain{Name: "POSTROUTING", Table: table}, chain)
	if err != nil {
		return nil, nil, false, err
	}
	return own, slices.Concat(jumps, rules), false, nil
}
