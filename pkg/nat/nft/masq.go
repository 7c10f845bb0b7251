package nft

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/nat"
	"github.com/cnisuite/cni/pkg/netconf"
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
	// MasqTableName is the masquerade table, of family inet (MasqTable);
	// `cnictl reset` removes it whole.
	MasqTableName   = "cni_plugins_masquerade"
	masqChecks      = "masq_checks"
	masqPostrouting = "postrouting"
)

// maxMasqComment is where the reference cuts an attachment's comment: the
// longest comment nft accepts (so `nft list ruleset` stays loadable). The
// reference's GC compares whole comments, so ours must be cut alike.
const maxMasqComment = 128

// Masq masquerades attachments' traffic with nftables in the current
// network namespace.
type Masq struct{}

// MasqTable is the masquerade table.
func MasqTable() *nftables.Table {
	return &nftables.Table{Name: MasqTableName, Family: nftables.TableFamilyINet}
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
func instanceHash(a nat.Attachment) string {
	return networkHash(a.Network) + shortHash(a.IfName+":"+a.ContainerID)
}

// instanceHashLen is the length of every instanceHash.
const instanceHashLen = 16 + 1 + 16

// masqComment is the comment of an attachment's rules: its hash, then the
// names for people, without double quotes, which nft cannot print inside
// a comment.
func masqComment(a nat.Attachment) string {
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
func (m Masq) Setup(ctx context.Context, a nat.Attachment, addrs []netip.Prefix) error {
	if len(addrs) == 0 {
		return m.Teardown(ctx, a)
	}
	tag := masqComment(a)
	return transact(func(conn *nat.NFTConn) (bool, error) {
		rules, err := readMasq(conn)
		if err != nil {
			return false, err
		}
		ensureMasqLayout(conn)
		if err := delRules(conn, withPrefix(rules, instanceHash(a))); err != nil {
			return false, err
		}
		checks := &nftables.Chain{Name: masqChecks, Table: MasqTable()}
		for _, p := range addrs {
			conn.AddRule(&nftables.Rule{Table: MasqTable(), Chain: checks, Exprs: masqRule(p), UserData: comment(tag)})
		}
		return true, nil
	})
}

// Teardown removes the attachment's rules. It needs no address, so it
// works after the container's namespace is gone; no rule is success.
func (Masq) Teardown(_ context.Context, a nat.Attachment) error {
	return sweepMasq(func(rules []*nftables.Rule) []*nftables.Rule {
		return withPrefix(rules, instanceHash(a))
	})
}

// GC removes the rules of network's attachments that are not in valid.
// Attachments are told apart by hash alone: the names after it may be cut.
func (Masq) GC(_ context.Context, network string, valid []netconf.Attachment) error {
	keep := map[string]bool{}
	for _, v := range valid {
		keep[instanceHash(nat.Attachment{Network: network, ContainerID: v.ContainerID, IfName: v.IfName})] = true
	}
	return sweepMasq(func(rules []*nftables.Rule) []*nftables.Rule {
		return slices.DeleteFunc(withPrefix(rules, networkHash(network)), func(r *nftables.Rule) bool {
			c := ruleComment(r)
			return keep[c[:min(len(c), instanceHashLen)]]
		})
	})
}

// sweepMasq deletes the rules of masq_checks that pick chooses, in one
// transaction. A node without nftables has no rules to delete.
func sweepMasq(pick func([]*nftables.Rule) []*nftables.Rule) error {
	err := transact(func(conn *nat.NFTConn) (bool, error) {
		rules, err := readMasq(conn)
		if err != nil {
			return false, err
		}
		gone := pick(rules)
		return len(gone) > 0, delRules(conn, gone)
	})
	if nftAbsent(err) {
		return nil
	}
	return err
}

// nftAbsent tells whether err says the kernel has no nftables (the
// subsystem or netfilter's netlink family missing), as on a node that runs
// iptables-legacy on a kernel without nf_tables.
func nftAbsent(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPROTONOSUPPORT)
}

// readMasq takes the rules of masq_checks, expressions left encoded, as
// one stable view; no table is no rules.
func readMasq(conn *nat.NFTConn) ([]*nftables.Rule, error) {
	var rules []*nftables.Rule
	err := conn.Stable(func() error {
		raw, err := conn.DumpRules(MasqTable(), masqChecks)
		if err != nil {
			return fmt.Errorf("listing nftables chain %s %s: %w", MasqTableName, masqChecks, err)
		}
		rules = rules[:0]
		for _, r := range raw {
			rules = append(rules, r.Rule(MasqTable()))
		}
		return nil
	})
	return rules, err
}

func withPrefix(rules []*nftables.Rule, prefix string) []*nftables.Rule {
	var out []*nftables.Rule
	for _, r := range rules {
		if strings.HasPrefix(ruleComment(r), prefix) {
			out = append(out, r)
		}
	}
	return out
}

func delRules(conn *nat.NFTConn, rules []*nftables.Rule) error {
	for _, r := range rules {
		if err := conn.DelRule(r); err != nil {
			return err
		}
	}
	return nil
}

// ensureMasqLayout creates the table and chains unless they exist and
// rewrites postrouting, which holds only the layout's rules.
func ensureMasqLayout(conn *nat.NFTConn) {
	t := MasqTable()
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
	return [][]expr.Any{
		concat(famIPv4.isFamily(), famIPv4.addrMatch(famIPv4.daddr, netip.MustParsePrefix("224.0.0.0/4"), false), ret),
		concat(famIPv6.isFamily(), famIPv6.addrMatch(famIPv6.daddr, netip.MustParsePrefix("ff00::/8"), false), ret),
		{&expr.Verdict{Kind: expr.VerdictGoto, Chain: masqChecks}},
	}
}

// masqRule is "ip saddr <addr> ip daddr != <subnet> masquerade" (ip6 for
// an IPv6 address).
func masqRule(p netip.Prefix) []expr.Any {
	f := famOf(p.Addr())
	host := netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
	return concat(f.isFamily(), f.addrMatch(f.saddr, host, false), f.addrMatch(f.daddr, p.Masked(), true), []expr.Any{&expr.Masq{}})
}

// isFamily is "meta nfproto ipv4" (or ipv6), which an inet table's rule
// needs before it reads an address: nft adds it ahead of a rule's first
// ip or ip6 match.
func (f fam) isFamily() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(f.nfproto)}},
	}
}
