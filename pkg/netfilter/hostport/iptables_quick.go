package hostport

import (
	"slices"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// quickDel removes an attachment's port-mapping rules in one family
// without running iptables, when it can see that nothing else is at
// stake. It returns false when it cannot or should not decide; the caller
// then reads the table with iptables-save and plans the removal.
type quickDel func(f family.Family, att Attachment) (done bool)

// nftQuickDel edits iptables-nft's nat table over netlink, in one nft
// transaction: the attachment's entry rules in CNI-HOSTPORT-DNAT (found by
// their tags) and its CNI-DN chain go; a DEL costs no process. It handles
// the common case only: it leaves to iptables a namespace where the legacy
// x_tables nat table is in use (then netlink does not see every rule), a
// chain shared with another interface of the container, an attachment
// with the pre-v0.7 SNAT chain, and the last mappings of the node (whose
// shared chains go too). The plan comes from a stable read (a dump that a
// concurrent commit interrupts can come back without the attachment's
// chain: TestKillSafety met one); a transaction that finds a rule gone
// because a writer changed the table since fails as a whole and is left
// to iptables too.
func nftQuickDel(f family.Family, att Attachment) bool {
	return nftconn.NATDelete(f, func(conn *nftconn.Conn, table *nftables.Table) (*nftables.Chain, []*nftables.Rule, bool, error) {
		return planQuickDel(conn, table, att)
	})
}

// planQuickDel reads the table and decides what a quick DEL removes: the
// attachment's chain, its rules and the jumps to it; no chain when the
// attachment has none (nothing is true) or when the DEL is left to
// iptables. It changes nothing.
func planQuickDel(conn *nftconn.Conn, table *nftables.Table, att Attachment) (*nftables.Chain, []*nftables.Rule, bool, error) {
	names, err := conn.DumpChains(table)
	if err != nil {
		return nil, nil, false, err
	}
	ownName := dnatChainName(att.Network, att.ContainerID)
	switch {
	case !slices.Contains(names, ownName):
		return nil, nil, true, nil
	case slices.Contains(names, hashedChain(oldSNATPrefix, att.Network, att.ContainerID)),
		!slices.Contains(names, hostPortDNATChain):
		return nil, nil, false, nil
	}
	own := &nftables.Chain{Name: ownName, Table: table}
	rules, err := conn.GetRules(table, own)
	if err != nil {
		return nil, nil, false, err
	}
	if slices.ContainsFunc(rules, func(r *nftables.Rule) bool { return !ownedBy(r, att) }) {
		return nil, nil, false, nil
	}
	mine, total, err := nftconn.JumpsInto(conn, &nftables.Chain{Name: hostPortDNATChain, Table: table}, ownName)
	if err != nil || len(mine) == total {
		return nil, nil, false, err // the node's last mappings: the shared chains go too
	}
	return own, slices.Concat(mine, rules), false, nil
}

// ownedBy reads the rule's comment match, as iptables-nft stores it.
func ownedBy(r *nftables.Rule, att Attachment) bool {
	tag, ok := parseTag(nftconn.XTComment(r))
	return ok && att.owns(tag)
}
