package nft

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/nat"
)

// flanneld's nftables layout (its EnableNFTables mode): a table per family,
// each with a nat base chain for masquerading and a filter base chain
// accepting forwarded cluster traffic. The names are flanneld's, so a node
// moving between flanneld and subnetd finds and replaces the other's rules,
// and an operator reads them where flannel's documentation says they are.
const (
	FlannelTableV4   = "flannel-ipv4"
	FlannelTableV6   = "flannel-ipv6"
	flannelMasqChain = "postrtg"
	flannelFwdChain  = "forward"
	kubeProxyMark    = 0x4000 // what kube-proxy masquerades itself
)

// FlannelHost applies, checks and removes the host rules of nat.FlannelRules
// as nftables, over netlink: every change of both families is one
// transaction, which the kernel applies whole or not at all.
type FlannelHost struct{}

func (f fam) flannelTable() *nftables.Table {
	name := FlannelTableV4
	if f == famIPv6 {
		name = FlannelTableV6
	}
	return &nftables.Table{Name: name, Family: f.family}
}

// flannelChain is a base chain of the layout and its rules; rules is nil
// for a chain that should not exist.
type flannelChain struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

// flannelChains returns f's two chains as r wants them.
func (f fam) flannelChains(r nat.FlannelRules) []flannelChain {
	t := f.flannelTable()
	policy := nftables.ChainPolicyAccept
	masq := flannelChain{chain: &nftables.Chain{Name: flannelMasqChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &policy}}
	fwd := flannelChain{chain: &nftables.Chain{Name: flannelFwdChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy}}
	n, ok := flannelNet(r, f)
	if ok && r.Masq {
		masq.rules = f.flannelMasqRules(n, !r.NoRandomFully)
	}
	if ok && r.Forward {
		accept := []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
		fwd.rules = [][]expr.Any{
			concat(f.addrMatch(f.saddr, n.Network, false), accept),
			concat(f.addrMatch(f.daddr, n.Network, false), accept),
		}
	}
	return []flannelChain{masq, fwd}
}

func flannelNet(r nat.FlannelRules, f fam) (nat.FlannelNet, bool) {
	for _, n := range r.Nets {
		if n.Network.Addr().Is6() == (f == famIPv6) {
			return nat.FlannelNet{Network: n.Network.Masked(), Subnet: n.Subnet.Masked()}, true
		}
	}
	return nat.FlannelNet{}, false
}

// flannelMasqRules are the iptables backend's FLANNEL-POSTRTG rules, in
// its order and with its meaning; first match wins.
func (f fam) flannelMasqRules(n nat.FlannelNet, fullyRandom bool) [][]expr.Any {
	N, S := n.Network, n.Subnet
	multicast := netip.MustParsePrefix("224.0.0.0/4")
	if f == famIPv6 {
		multicast = netip.MustParsePrefix("ff00::/8")
	}
	ret := []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}
	masq := []expr.Any{&expr.Masq{FullyRandom: fullyRandom}}
	return [][]expr.Any{
		concat(hasMark(kubeProxyMark), ret),
		concat(f.addrMatch(f.saddr, S, false), f.addrMatch(f.daddr, N, false), ret),
		concat(f.addrMatch(f.saddr, N, false), f.addrMatch(f.daddr, S, false), ret),
		concat(f.addrMatch(f.saddr, N, true), f.addrMatch(f.daddr, S, false), ret),
		concat(f.addrMatch(f.saddr, N, false), f.addrMatch(f.daddr, multicast, true), masq),
		concat(f.addrMatch(f.saddr, N, true), f.addrMatch(f.daddr, N, false), masq),
	}
}

// Apply makes both families' tables match r in one transaction; applying
// twice leaves the same rules, Apply(nat.FlannelRules{}) removes the tables.
func (h FlannelHost) Apply(ctx context.Context, r nat.FlannelRules) error {
	_, err := h.each(r, func([]string) bool { return true })
	return err
}

// Check lists how the tables differ from r, one line per difference,
// without changing anything.
func (h FlannelHost) Check(ctx context.Context, r nat.FlannelRules) ([]string, error) {
	return h.each(r, func([]string) bool { return false })
}

// Ensure repairs what Check would report and returns it; intact tables
// cost one read and no write.
func (h FlannelHost) Ensure(ctx context.Context, r nat.FlannelRules) ([]string, error) {
	return h.each(r, func(drift []string) bool { return len(drift) > 0 })
}

// Teardown removes both tables, whoever made them (flanneld too).
func (h FlannelHost) Teardown(ctx context.Context) error {
	return h.Apply(ctx, nat.FlannelRules{})
}

// each reads both families, lists their drift and, when rewrite says so,
// replaces each drifted family's table in one transaction: the table is
// deleted and made again, so no packet sees half a rule set and a chain
// someone changed the hook or priority of is made right.
func (h FlannelHost) each(r nat.FlannelRules, rewrite func([]string) bool) ([]string, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	conn, err := nat.DialNFT()
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	defer conn.Close()
	var drift []string
	var queued bool
	for _, f := range fams {
		chains := f.flannelChains(r)
		found, err := readFlannel(conn, f)
		if err != nil {
			return nil, err
		}
		d := flannelDrift(f, found, chains)
		drift = append(drift, d...)
		if rewrite(d) {
			queueFlannel(conn, f, found != nil, chains)
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

// flannelFound is one family's table as read: its chains and their rules.
type flannelFound map[string]foundChain

type foundChain struct {
	chain *nftables.Chain
	rules []*nftables.Rule
}

// readFlannel reads f's table; nil when there is none.
func readFlannel(conn *nat.NFTConn, f fam) (flannelFound, error) {
	t := f.flannelTable()
	tables, err := conn.ListTablesOfFamily(f.family)
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name }) {
		return nil, nil
	}
	chains, err := conn.ListChainsOfTableFamily(f.family)
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	found := flannelFound{}
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

// flannelDrift compares one family's table (nil: none) with the wanted
// chains.
func flannelDrift(f fam, found flannelFound, want []flannelChain) []string {
	family := "IPv4"
	if f == famIPv6 {
		family = "IPv6"
	}
	table := fmt.Sprintf("%s nftables %s %s", family, tableFamilyName(f.family), f.flannelTable().Name)
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
		if !slices.ContainsFunc(want, func(w flannelChain) bool { return w.chain.Name == c }) {
			drift = append(drift, table+" "+c+": present but not wanted")
		}
	}
	return drift
}

func wantsAny(want []flannelChain) bool {
	return slices.ContainsFunc(want, func(w flannelChain) bool { return w.rules != nil })
}

func sameHook(a, b *nftables.Chain) bool {
	return a.Type == b.Type && a.Hooknum != nil && *a.Hooknum == *b.Hooknum &&
		a.Priority != nil && *a.Priority == *b.Priority && a.Policy != nil && *a.Policy == *b.Policy
}

func sameRules(f fam, got []*nftables.Rule, want [][]expr.Any) bool {
	if len(got) != len(want) {
		return false
	}
	for i, r := range got {
		if !sameExprs(f, r.Exprs, want[i]) {
			return false
		}
	}
	return true
}

// queueFlannel queues the replacement of f's table by the wanted chains;
// a family that wants none is left without a table.
func queueFlannel(conn *nat.NFTConn, f fam, exists bool, want []flannelChain) {
	t := f.flannelTable()
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
