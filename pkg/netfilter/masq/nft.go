package masq

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// The bridge plugin's ipMasq over nftables, in the layout of the reference
// plugins (v1.6 and later), so that a node can switch between the two and
// either removes the other's rules: table inet cni_plugins_masquerade, whose
// base chain postrouting skips multicast and goes to masq_checks, which
// holds one rule per address of each attachment. A rule's comment starts
// with the attachment's hash, by which DEL and GC find it; nothing else
// names the attachment.
//
// Attachments add and delete their own rules only, and the layout is never
// deleted (as in the reference), so that concurrent ADDs, DELs and GCs
// cannot take each other's rules: each plans from a whole view of
// masq_checks and deletes rules by handle, and a rule deleted meanwhile
// fails the transaction, which starts over.
const (
	// nftTableName is the masquerade table, of family inet (NFTTable).
	nftTableName    = "cni_plugins_masquerade"
	masqChecks      = "masq_checks"
	masqPostrouting = "postrouting"
)

// maxMasqComment is where the reference cuts an attachment's comment: the
// longest comment nft accepts (so `nft list ruleset` stays loadable). The
// reference's GC compares whole comments, so ours must be cut alike.
const maxMasqComment = 128

// NFTables masquerades attachments' traffic with nftables in the current
// network namespace.
type NFTables struct{}

// NFTTable is the masquerade table; `cnictl reset` removes it whole.
func NFTTable() *nftables.Table {
	return &nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet}
}

// shortHash is the reference's hash of s: the first 16 hex digits of its
// SHA-512.
func shortHash(s string) string {
	sum := sha512.Sum512([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// networkHash starts the comment of every rule of the network.
func networkHash(network string) string { return shortHash(network) + "-" }

// instanceHash starts the comment of every rule of one attachment.
func instanceHash(a Attachment) string {
	return networkHash(a.Network) + shortHash(a.IfName+":"+a.ContainerID)
}

// instanceHashLen is the length of every instanceHash.
const instanceHashLen = 16 + 1 + 16

// masqComment is the comment of an attachment's rules: its hash, then the
// names for people, without double quotes, which nft cannot print inside
// a comment.
func masqComment(a Attachment) string {
	unquote := func(s string) string { return strings.ReplaceAll(s, `"`, "") }
	c := fmt.Sprintf("%s, net: %s, if: %s, id: %s", instanceHash(a), unquote(a.Network), unquote(a.IfName), unquote(a.ContainerID))
	if len(c) > maxMasqComment {
		c = c[:maxMasqComment]
	}
	return c
}

// Setup masquerades what each address of the attachment sends outside its
// subnet. The transaction also creates the layout, rewrites postrouting and
// replaces the attachment's earlier rules, so a repeated ADD converges.
func (m NFTables) Setup(ctx context.Context, a Attachment, addrs []netip.Prefix) error {
	if len(addrs) == 0 {
		return m.Teardown(ctx, a)
	}
	tag := masqComment(a)
	return nftconn.Transact(func(conn *nftconn.Conn) (bool, error) {
		rules, err := readMasq(conn)
		if err != nil {
			return false, err
		}
		ensureMasqLayout(conn)
		if err := conn.DelRules(withPrefix(rules, instanceHash(a))); err != nil {
			return false, err
		}
		checks := &nftables.Chain{Name: masqChecks, Table: NFTTable()}
		for _, p := range addrs {
			conn.AddRule(&nftables.Rule{Table: NFTTable(), Chain: checks, Exprs: masqRule(p), UserData: nftconn.Comment(tag)})
		}
		return true, nil
	})
}

// Teardown removes the attachment's rules. It needs no address, so it
// works after the container's namespace is gone; no rule is success.
func (NFTables) Teardown(_ context.Context, a Attachment) error {
	return sweepMasq(func(rules []*nftables.Rule) []*nftables.Rule {
		return withPrefix(rules, instanceHash(a))
	})
}

// GC removes the rules of network's attachments that are not in valid.
// Attachments are told apart by hash alone: the names after it may be cut.
func (NFTables) GC(_ context.Context, network string, valid []netconf.Attachment) error {
	keep := map[string]bool{}
	for _, v := range valid {
		keep[instanceHash(Attachment{Network: network, ContainerID: v.ContainerID, IfName: v.IfName})] = true
	}
	return sweepMasq(func(rules []*nftables.Rule) []*nftables.Rule {
		return slices.DeleteFunc(withPrefix(rules, networkHash(network)), func(r *nftables.Rule) bool {
			c := nftconn.RuleComment(r)
			return keep[c[:min(len(c), instanceHashLen)]]
		})
	})
}

// sweepMasq deletes the rules of masq_checks that pick chooses, in one
// transaction. A node without nftables has no rules to delete.
func sweepMasq(pick func([]*nftables.Rule) []*nftables.Rule) error {
	err := nftconn.Transact(func(conn *nftconn.Conn) (bool, error) {
		rules, err := readMasq(conn)
		if err != nil {
			return false, err
		}
		gone := pick(rules)
		return len(gone) > 0, conn.DelRules(gone)
	})
	if nftAbsent(err) {
		return nil
	}
	return err
}

// nftAbsent is nftconn.Absent: a node without nftables has no rules.
func nftAbsent(err error) bool { return nftconn.Absent(err) }

// readMasq takes the rules of masq_checks, expressions left encoded, as
// one stable view; no table is no rules.
func readMasq(conn *nftconn.Conn) ([]*nftables.Rule, error) {
	var rules []*nftables.Rule
	err := conn.Stable(func() error {
		raw, err := conn.DumpRules(NFTTable(), masqChecks)
		if err != nil {
			return fmt.Errorf("listing nftables chain %s %s: %w", nftTableName, masqChecks, err)
		}
		rules = rules[:0]
		for _, r := range raw {
			rules = append(rules, r.Rule(NFTTable()))
		}
		return nil
	})
	return rules, err
}

func withPrefix(rules []*nftables.Rule, prefix string) []*nftables.Rule {
	var out []*nftables.Rule
	for _, r := range rules {
		if strings.HasPrefix(nftconn.RuleComment(r), prefix) {
			out = append(out, r)
		}
	}
	return out
}

// ensureMasqLayout creates the table and chains unless they exist and
// rewrites postrouting, which holds only the layout's rules.
func ensureMasqLayout(conn *nftconn.Conn) {
	t := NFTTable()
	conn.AddTable(t)
	conn.AddChain(&nftables.Chain{Name: masqChecks, Table: t})
	post := conn.AddChain(&nftables.Chain{Name: masqPostrouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	conn.FlushChain(post)
	for _, e := range masqSkeleton() {
		conn.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: e})
	}
}

// masqSkeleton is postrouting: "ip daddr 224.0.0.0/4 return", "ip6 daddr
// ff00::/8 return", "goto masq_checks".
func masqSkeleton() [][]expr.Any {
	ret := []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	var out [][]expr.Any
	for _, f := range family.All() {
		out = append(out, nftconn.Concat(nftconn.IsFamily(f), nftconn.AddrMatch(nftconn.Daddr, f.Multicast(), false), ret))
	}
	return append(out, []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: masqChecks}})
}

// masqRule is "ip saddr <addr> ip daddr != <subnet> masquerade" (ip6 for
// an IPv6 address).
func masqRule(p netip.Prefix) []expr.Any {
	host := netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
	return nftconn.Concat(nftconn.IsFamily(family.OfPrefix(p)), nftconn.AddrMatch(nftconn.Saddr, host, false),
		nftconn.AddrMatch(nftconn.Daddr, p.Masked(), true), []expr.Any{&expr.Masq{}})
}
