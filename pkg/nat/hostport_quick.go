package nat

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
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
// shared chains go too). A transaction that finds a rule gone because a
// concurrent writer changed the table fails as a whole and is left to
// iptables too.
func NFTQuickDel(v6 bool, att Attachment) bool {
	if legacyNAT(v6) {
		return false
	}
	conn, err := DialNFT()
	if err != nil {
		return false
	}
	defer conn.Close()
	fam := nftables.TableFamilyIPv4
	if v6 {
		fam = nftables.TableFamilyIPv6
	}
	all, err := conn.ListChainsOfTableFamily(fam)
	if err != nil {
		return false
	}
	chains := natChains(all)
	own, entry := chains[DNATChainName(att.Network, att.ContainerID)], chains[HostPortDNATChain]
	if own == nil {
		// A dump that a concurrent commit interrupts comes back short
		// (neither library checks NLM_F_DUMP_INTR): ask for the chain
		// itself before taking its absence for the absence of rules.
		// TestKillSafety (portmap-iptables, 1000 cycles) met it: a dump of
		// 44 chains without the attachment's, which a GET then found.
		var gone bool
		if own, gone = lookupChain(conn, &nftables.Table{Name: "nat", Family: fam}, DNATChainName(att.Network, att.ContainerID)); gone {
			return true // no chain, so no rule of this attachment
		}
	}
	switch {
	case chains[hashedChain(oldSNATPrefix, att.Network, att.ContainerID)] != nil:
		return false
	case own == nil, entry == nil:
		return false
	}
	return quickDelChain(conn, att, own, entry)
}

// lookupChain gets one chain by name, a request that is answered whole;
// gone reports that the kernel said there is none.
func lookupChain(conn *NFTConn, table *nftables.Table, name string) (ch *nftables.Chain, gone bool) {
	ch, err := conn.ListChain(table, name)
	if err != nil {
		// The library formats the errno with %v: its text is all there is.
		return nil, strings.Contains(err.Error(), unix.ENOENT.Error())
	}
	return ch, false
}

// quickDelChain removes own and the entry rules that jump to it, when own
// holds only att's rules and other attachments keep entry in use.
func quickDelChain(conn *NFTConn, att Attachment, own, entry *nftables.Chain) bool {
	rules, err := conn.GetRules(own.Table, own)
	if err != nil || slices.ContainsFunc(rules, func(r *nftables.Rule) bool { return !ownedBy(r, att) }) {
		return false
	}
	mine, total, err := jumpsInto(conn, entry, own.Name)
	if err != nil || len(mine) == total {
		return false // unreadable, or the node's last mappings: the shared chains go too
	}
	// Rules go by handle, the chain's own too, rather than by flushing it:
	// a rule a short dump did not show stays, so the chain's deletion and
	// with it the whole transaction fail instead of taking another
	// attachment's rule along.
	for _, r := range slices.Concat(mine, rules) {
		if err := conn.DelRule(r); err != nil {
			return false
		}
	}
	conn.DelChain(own)
	return conn.Flush() == nil
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

func natChains(all []*nftables.Chain) map[string]*nftables.Chain {
	m := map[string]*nftables.Chain{}
	for _, c := range all {
		if c.Table.Name == "nat" {
			m[c.Name] = c
		}
	}
	return m
}

// ownedBy reads the rule's comment match, as iptables-nft stores it.
func ownedBy(r *nftables.Rule, att Attachment) bool {
	for _, e := range r.Exprs {
		m, ok := e.(*expr.Match)
		if !ok || m.Name != "comment" {
			continue
		}
		if c, ok := m.Info.(*xt.Comment); ok {
			tag, ok := ParseTag(string(*c))
			return ok && att.Owns(tag)
		}
	}
	return false
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
