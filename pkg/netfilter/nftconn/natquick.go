package nftconn

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/family"
)

// XTPlan reads one of iptables-nft's tables and decides what XTDelete
// removes: rules to delete by handle and, when not nil, a chain to delete
// after them (the rules then include the jumps to it and its own); or no
// rule and whether that is because there is nothing to remove (nothing)
// or because the removal is left to iptables. It changes nothing.
type XTPlan func(*Conn, *nftables.Table) (chain *nftables.Chain, rules []*nftables.Rule, nothing bool, err error)

// NATDelete is XTDelete of iptables-nft's nat table.
func NATDelete(f family.Family, plan XTPlan) bool { return XTDelete(f, "nat", plan) }

// XTDelete removes what plan, run on a stable read, chooses from
// iptables-nft's table (nat, filter) of family f, in one nft transaction
// over netlink, which spares the iptables backends' DELs the iptables
// processes. Rules go by handle, a chain's own too, rather than by
// flushing it: a rule added since the read stays, so the chain's deletion
// and with it the whole transaction fail instead of taking another's rule
// along. It reports whether the removal is done: false when it cannot
// tell (the legacy x_tables table is in use, whose rules netlink does not
// see), when plan leaves it to iptables, or when the transaction failed.
func XTDelete(f family.Family, table string, plan XTPlan) bool {
	conn, t, ok := dialXT(f, table)
	if !ok {
		return false
	}
	defer conn.Close()
	var chain *nftables.Chain
	var rules []*nftables.Rule
	var nothing bool
	err := conn.Stable(func() (err error) { chain, rules, nothing, err = plan(conn, t); return err })
	switch {
	case err != nil:
		return false
	case chain == nil && len(rules) == 0:
		return nothing
	}
	if err := conn.DelRules(rules); err != nil {
		return false
	}
	if chain != nil {
		conn.DelChain(chain)
	}
	return conn.Flush() == nil
}

// dialXT opens a connection for editing iptables-nft's table of one
// family over netlink; ok is false when it cannot, or when the legacy
// x_tables table of that name is in use.
func dialXT(f family.Family, table string) (conn *Conn, t *nftables.Table, ok bool) {
	if legacyXT(f, table) {
		return nil, nil, false
	}
	conn, err := Dial()
	if err != nil {
		return nil, nil, false
	}
	return conn, &nftables.Table{Name: table, Family: TableFamily(f)}, true
}

// legacyTableNames lists, by family, the x_tables tables in use.
// thread-self: /proc/net is the main thread's namespace, and callers may
// have entered another on this thread.
var legacyTableNames = [2]string{
	family.IPv4: "/proc/thread-self/net/ip_tables_names",
	family.IPv6: "/proc/thread-self/net/ip6_tables_names",
}

// legacyXT tells whether the legacy x_tables table (nat, filter) of
// family f is in use in the namespace, or whether it cannot tell: then
// netlink does not see every iptables rule of that table.
func legacyXT(f family.Family, table string) bool {
	b, err := os.ReadFile(legacyTableNames[f])
	return (err != nil && !errors.Is(err, fs.ErrNotExist)) || slices.Contains(strings.Fields(string(b)), table)
}

// JumpsInto lists the rules of from that jump to chain, and how many rules
// from has, from a dump whose rules it does not decode: a node's
// CNI-HOSTPORT-DNAT holds two rules per mapped pod, and decoding their
// expressions (xt matches) would cost more than the rest of a DEL's work
// (~2 ms for 60 pods). A jump is found by the target chain's name in the
// rule's expressions, NUL-terminated.
func JumpsInto(conn *Conn, from *nftables.Chain, chain string) (rules []*nftables.Rule, total int, err error) {
	all, err := conn.DumpRules(from.Table, from.Name)
	if err != nil {
		return nil, 0, err
	}
	target := append([]byte(chain), 0)
	for _, r := range all {
		if bytes.Contains(r.Exprs, target) {
			rules = append(rules, &nftables.Rule{Table: from.Table, Chain: from, Handle: r.Handle})
		}
	}
	return rules, len(all), nil
}
