package nat

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// QuickDel removes an attachment's port-mapping rules in one family
// without running iptables, when it can see that nothing else is at
// stake. It returns false when it cannot or should not decide; the caller
// then reads the table with iptables-save and plans the removal.
type QuickDel func(v6 bool, att Attachment) (done bool)

// NFTQuickDel edits iptables-nft's nat table over netlink, in one nft
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
func NFTQuickDel(v6 bool, att Attachment) bool {
	conn, table, ok := dialNAT(v6)
	if !ok {
		return false
	}
	defer conn.Close()
	var q quickDel
	if err := conn.Stable(func() (err error) { q, err = planQuickDel(conn, table, att); return err }); err != nil {
		return false
	}
	if q.nothing {
		return true // no chain, so no rule of this attachment
	}
	if q.own == nil {
		return false
	}
	// Rules go by handle, the chain's own too, rather than by flushing it:
	// a rule added since the read stays, so the chain's deletion and with it
	// the whole transaction fail instead of taking another attachment's
	// rule along.
	for _, r := range q.rules {
		if err := conn.DelRule(r); err != nil {
			return false
		}
	}
	conn.DelChain(q.own)
	return conn.Flush() == nil
}

// quickDel is what a quick DEL removes: own (nil: leave the DEL to
// iptables) and its rules and the jumps to it; nothing means the
// attachment has no chain.
type quickDel struct {
	own     *nftables.Chain
	rules   []*nftables.Rule
	nothing bool
}

// planQuickDel reads the table and decides; it does not change anything.
func planQuickDel(conn *NFTConn, table *nftables.Table, att Attachment) (quickDel, error) {
	names, err := conn.DumpChains(table)
	if err != nil {
		return quickDel{}, err
	}
	ownName := DNATChainName(att.Network, att.ContainerID)
	switch {
	case !slices.Contains(names, ownName):
		return quickDel{nothing: true}, nil
	case slices.Contains(names, hashedChain(oldSNATPrefix, att.Network, att.ContainerID)),
		!slices.Contains(names, HostPortDNATChain):
		return quickDel{}, nil
	}
	own := &nftables.Chain{Name: ownName, Table: table}
	rules, err := conn.GetRules(table, own)
	if err != nil {
		return quickDel{}, err
	}
	if slices.ContainsFunc(rules, func(r *nftables.Rule) bool { return !ownedBy(r, att) }) {
		return quickDel{}, nil
	}
	mine, total, err := jumpsInto(conn, &nftables.Chain{Name: HostPortDNATChain, Table: table}, ownName)
	if err != nil || len(mine) == total {
		return quickDel{}, err // the node's last mappings: the shared chains go too
	}
	return quickDel{own: own, rules: slices.Concat(mine, rules)}, nil
}

// jumpsInto lists the rules of entry that jump to chain, and how many
// rules entry has, from a dump whose rules it does not decode: a node's
// CNI-HOSTPORT-DNAT holds two rules per mapped pod, and decoding their
// expressions (xt matches) would cost more than the rest of a DEL's work
// (~2 ms for 60 pods). A jump is found by the target chain's name in the
// rule's expressions: "CNI-DN-" and 21 hex digits, NUL-terminated.
func jumpsInto(conn *NFTConn, entry *nftables.Chain, chain string) (rules []*nftables.Rule, total int, err error) {
	all, err := conn.DumpRules(entry.Table, entry.Name)
	if err != nil {
		return nil, 0, err
	}
	target := append([]byte(chain), 0)
	for _, r := range all {
		if bytes.Contains(r.Exprs, target) {
			rules = append(rules, &nftables.Rule{Table: entry.Table, Chain: entry, Handle: r.Handle})
		}
	}
	return rules, len(all), nil
}

// ownedBy reads the rule's comment match, as iptables-nft stores it.
func ownedBy(r *nftables.Rule, att Attachment) bool {
	tag, ok := ParseTag(xtComment(r))
	return ok && att.Owns(tag)
}

// dialNAT opens a connection for editing iptables-nft's nat table of one
// family over netlink; ok is false when it cannot, or when the legacy
// x_tables nat table is in use, whose rules netlink does not see.
func dialNAT(v6 bool) (conn *NFTConn, table *nftables.Table, ok bool) {
	if legacyNAT(v6) {
		return nil, nil, false
	}
	conn, err := DialNFT()
	if err != nil {
		return nil, nil, false
	}
	table = &nftables.Table{Name: "nat", Family: nftables.TableFamilyIPv4}
	if v6 {
		table.Family = nftables.TableFamilyIPv6
	}
	return conn, table, true
}

// legacyNAT tells whether the legacy x_tables nat table is in use in the
// namespace, or whether it cannot tell.
func legacyNAT(v6 bool) bool {
	// thread-self: /proc/net is the main thread's namespace, and callers
	// may have entered another on this thread.
	names := "/proc/thread-self/net/ip_tables_names"
	if v6 {
		names = "/proc/thread-self/net/ip6_tables_names"
	}
	b, err := os.ReadFile(names)
	return (err != nil && !errors.Is(err, fs.ErrNotExist)) || slices.Contains(strings.Fields(string(b)), "nat")
}
