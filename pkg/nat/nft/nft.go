// Package nft holds the suite's nftables backends: portmap's port mappings
// (nft.go, rules.go), the bridge plugin's ipMasq (masq.go) and subnetd's
// host rules (flannel.go), each in the layout of the program it replaces
// (the reference plugins' tables cni_hostport and cni_plugins_masquerade,
// flanneld's flannel-ipv4 and flannel-ipv6), so that a node can switch
// between them and either cleans up the other's rules. It talks netlink
// (no `nft` process): every change is one nftables transaction covering
// both address families, which the kernel applies whole or not at all.
package nft

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/nat"
	"github.com/cnisuite/cni/pkg/netconf"
)

// HostPorts installs port mappings with nftables in the current network
// namespace.
type HostPorts struct{}

// maxAttempts bounds the read-plan-commit loop that concurrent writers can
// make fail.
const maxAttempts = 6

// maxComment is what the kernel keeps of a rule's user data (256 bytes,
// two of which are the comment's type and length).
const maxComment = 254

// Add installs the mappings of c towards each container address (at most
// one per family). The transaction also (re)creates the layout and
// replaces the attachment's earlier rules, so a repeated ADD converges.
func (HostPorts) Add(_ context.Context, c *nat.HostPortConf, addrs []netip.Prefix) error {
	if n := len(Tag(c.Attachment)); n > maxComment {
		return netconf.Invalid("the rule comment for network %q would be %d bytes, more than nftables' %d; shorten the network name", c.Network, n, maxComment)
	}
	conds := make([][]expr.Any, len(addrs))
	for i, p := range addrs {
		var err error
		if conds[i], err = ParseConditions(c.Conditions(p.Addr()), p.Addr().Is6()); err != nil {
			return netconf.Errorf(netconf.CodeUnsupportedField, "conditions: %w", err)
		}
	}
	return transact(func(conn *nat.NFTConn) (bool, error) {
		changed := false
		for i, p := range addrs {
			f := famOf(p.Addr())
			rules := buildRules(c, p, conds[i])
			if len(rules) == 0 {
				continue
			}
			st, err := read(conn, f)
			if err != nil {
				return false, err
			}
			ensureLayout(conn, f)
			for _, r := range st.owned(c.Attachment) {
				if err := conn.DelRule(r); err != nil {
					return false, err
				}
			}
			for _, r := range rules {
				conn.AddRule(&nftables.Rule{Table: f.table(), Chain: &nftables.Chain{Name: r.chain, Table: f.table()},
					Exprs: r.exprs, UserData: comment(Tag(c.Attachment))})
			}
			changed = true
		}
		return changed, nil
	})
}

// ensureLayout creates the table and chains unless they exist, and
// rewrites the fixed jump rules. Rewriting gives those rules new handles,
// which is what makes a concurrent DEL that planned to delete the table
// fail instead of deleting this ADD's rules.
func ensureLayout(conn *nat.NFTConn, f fam) {
	conn.AddTable(f.table())
	for _, ch := range f.chains() {
		conn.AddChain(ch)
	}
	for _, name := range []string{chainPre, chainOut, chainAll} {
		ch := &nftables.Chain{Name: name, Table: f.table()}
		conn.FlushChain(ch)
		for _, e := range skeletonRules()[name] {
			conn.AddRule(&nftables.Rule{Table: f.table(), Chain: ch, Exprs: e})
		}
	}
}

// Del removes the attachment's rules in both families, found by their
// tags, and the whole table when no other rule is left in it.
func (HostPorts) Del(_ context.Context, c *nat.HostPortConf, _ []netip.Prefix) error {
	return sweep(func(st *state) []*nftables.Rule { return st.owned(c.Attachment) })
}

// GC removes the rules of every attachment of network that valid rejects,
// and the table when nothing is left in it. Rules of the reference plugin
// name no network, so GC leaves them to DEL.
func (HostPorts) GC(_ context.Context, network string, valid nat.Valid) error {
	return sweep(func(st *state) []*nftables.Rule {
		var stale []*nftables.Rule
		for _, r := range st.attRules() {
			if t, ok := ParseTag(ruleComment(r)); ok && t.Network == network && !valid(t.ContainerID, t.IfName) {
				stale = append(stale, r)
			}
		}
		return stale
	})
}

// sweep deletes the rules pick chooses, in both families, in one
// transaction. A table left without attachment rules goes too, guarded by
// deleting the prerouting jump by its handle: a concurrent ADD has
// rewritten it, which makes the transaction fail and start over.
func sweep(pick func(*state) []*nftables.Rule) error {
	defer nat.LockSweeps()()
	return transact(func(conn *nat.NFTConn) (bool, error) {
		changed := false
		for _, f := range fams {
			st, err := read(conn, f)
			if err != nil {
				return false, err
			}
			if !st.exists {
				continue
			}
			gone := pick(st)
			if len(gone) == len(st.attRules()) && st.onlyOurs() {
				for _, r := range st.rules[chainPre] {
					if err := conn.DelRule(r); err != nil {
						return false, err
					}
				}
				conn.DelTable(f.table())
				changed = true
				continue
			}
			for _, r := range gone {
				if err := conn.DelRule(r); err != nil {
					return false, err
				}
				changed = true
			}
		}
		return changed, nil
	})
}

// Check verifies the layout and every rule of the attachment.
func (HostPorts) Check(_ context.Context, c *nat.HostPortConf, addrs []netip.Prefix) error {
	conn, err := nat.DialNFT()
	if err != nil {
		return fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	defer conn.Close()
	for _, p := range addrs {
		f := famOf(p.Addr())
		conds, err := ParseConditions(c.Conditions(p.Addr()), p.Addr().Is6())
		if err != nil {
			return netconf.Errorf(netconf.CodeUnsupportedField, "conditions: %w", err)
		}
		// Decoding keeps the window long, so a busy node's commits may
		// make this CHECK fail with code 11 (retry), never on a short view.
		var st *state
		err = conn.Stable(func() (err error) { st, err = readDecoded(conn, f); return err })
		if err != nil {
			return err
		}
		if err := st.check(Tag(c.Attachment), buildRules(c, p, conds)); err != nil {
			return err
		}
	}
	return nil
}

// transact runs build on a fresh read and commits what it queued; a
// commit that fails (a rule deleted or rewritten meanwhile) starts over.
func transact(build func(*nat.NFTConn) (bool, error)) error {
	var err error
	for attempt := range maxAttempts {
		if attempt > 0 {
			nat.Backoff(attempt)
		}
		conn, dialErr := nat.DialNFT()
		if dialErr != nil {
			return fmt.Errorf("opening nftables netlink socket: %w", dialErr)
		}
		var changed bool
		changed, err = build(conn)
		if err == nil && changed {
			err = conn.Flush()
		}
		conn.Close()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("nftables transaction failed %d times: %w", maxAttempts, err)
}

// state is what a read found in one family's table.
type state struct {
	f      fam
	exists bool
	chains map[string]bool
	rules  map[string][]*nftables.Rule
}

// read takes f's chains and rules (their expressions left encoded) as one
// stable view: a rule missing from a dump that a commit interrupted would
// be one a DEL leaves behind.
func read(conn *nat.NFTConn, f fam) (st *state, err error) {
	err = conn.Stable(func() (err error) { st, err = readRaw(conn, f); return err })
	return st, err
}

// readRaw reads the table's chains and rules without decoding the rules'
// expressions; a table without chains counts as absent.
func readRaw(conn *nat.NFTConn, f fam) (*state, error) {
	st := &state{f: f, chains: map[string]bool{}, rules: map[string][]*nftables.Rule{}}
	names, err := conn.DumpChains(f.table())
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	for _, n := range names {
		st.chains[n] = true
	}
	if st.exists = len(names) > 0; !st.exists {
		return st, nil
	}
	rules, err := conn.DumpRules(f.table(), "")
	if err != nil {
		return nil, fmt.Errorf("listing nftables rules: %w", err)
	}
	for _, r := range rules {
		st.rules[r.Chain] = append(st.rules[r.Chain], r.Rule(f.table()))
	}
	return st, nil
}

// readDecoded reads the table with every rule's expressions decoded, for
// CHECK, which compares them, and for Reset, which also takes a table
// without chains and deletes it whole.
func readDecoded(conn *nat.NFTConn, f fam) (*state, error) {
	st := &state{f: f, chains: map[string]bool{}, rules: map[string][]*nftables.Rule{}}
	tables, err := conn.ListTablesOfFamily(f.family)
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	st.exists = slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName })
	if !st.exists {
		return st, nil
	}
	chains, err := conn.ListChainsOfTableFamily(f.family)
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		st.chains[ch.Name] = true
		rules, err := conn.GetRules(f.table(), ch)
		if err != nil {
			return nil, fmt.Errorf("listing the rules of %s: %w", ch.Name, err)
		}
		st.rules[ch.Name] = rules
	}
	return st, nil
}

// attRules are the rules of every attachment in the table.
func (st *state) attRules() []*nftables.Rule {
	var out []*nftables.Rule
	for _, c := range ruleChains {
		out = append(out, st.rules[c]...)
	}
	return out
}

// owned are att's rules: tagged for it, or the reference's, whose comment
// is the container ID alone.
func (st *state) owned(att nat.Attachment) []*nftables.Rule {
	var out []*nftables.Rule
	for _, r := range st.attRules() {
		c := ruleComment(r)
		if t, ok := ParseTag(c); (ok && att.Owns(t)) || c == att.ContainerID {
			out = append(out, r)
		}
	}
	return out
}

// onlyOurs tells whether the table holds nothing but the layout's chains,
// so that deleting it takes nobody else's.
func (st *state) onlyOurs() bool {
	for name := range st.chains {
		if !slices.ContainsFunc(st.f.chains(), func(c *nftables.Chain) bool { return c.Name == name }) {
			return false
		}
	}
	return true
}

// check reports the first part of the layout or of want that is missing.
func (st *state) check(tag string, want []attRule) error {
	if !st.exists {
		return fmt.Errorf("nftables table %s %s is missing; DEL and ADD the attachment again", tableFamilyName(st.f.family), TableName)
	}
	for _, ch := range st.f.chains() {
		if !st.chains[ch.Name] {
			return fmt.Errorf("nftables chain %s of table %s is missing; DEL and ADD the attachment again", ch.Name, TableName)
		}
	}
	for chain, rules := range skeletonRules() {
		for _, e := range rules {
			if !slices.ContainsFunc(st.rules[chain], func(r *nftables.Rule) bool { return sameExprs(st.f, r.Exprs, e) }) {
				return fmt.Errorf("nftables chain %s lacks its jump to %s; DEL and ADD the attachment again", chain, e[len(e)-1].(*expr.Verdict).Chain)
			}
		}
	}
	have := st.tagged(tag, want)
	for i, w := range want {
		k, ok := ruleKey(st.f, w.chain, w.exprs)
		if !ok || have[k] == 0 {
			return fmt.Errorf("rule %d of the attachment in nftables chain %s (%s) is missing or changed; DEL and ADD the attachment again", i+1, w.chain, tableFamilyName(st.f.family))
		}
		have[k]-- // a rule wanted twice must be there twice
	}
	return nil
}

// tagged counts the rules tagged tag in the chains of want by ruleKey: one
// pass over those chains, so that looking each wanted rule up costs no
// scan of its chain (which made CHECK quadratic: 10000 mappings, 11 s).
func (st *state) tagged(tag string, want []attRule) map[string]int {
	have := map[string]int{}
	seen := map[string]bool{}
	for _, w := range want {
		if seen[w.chain] {
			continue
		}
		seen[w.chain] = true
		for _, r := range st.rules[w.chain] {
			if ruleComment(r) != tag {
				continue
			}
			if k, ok := ruleKey(st.f, w.chain, r.Exprs); ok {
				have[k]++
			}
		}
	}
	return have
}

// ruleKey is a rule's chain and its expressions' netlink encoding, what
// sameExprs compares; ok is false when an expression does not encode.
func ruleKey(f fam, chain string, exprs []expr.Any) (key string, ok bool) {
	b := append([]byte(chain), 0)
	for _, e := range exprs {
		enc, err := expr.Marshal(byte(f.family), e)
		if err != nil {
			return "", false
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(enc)))
		b = append(b, enc...)
	}
	return string(b), true
}

// sameExprs compares expressions by their netlink encoding.
func sameExprs(f fam, a, b []expr.Any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		ea, err1 := expr.Marshal(byte(f.family), a[i])
		eb, err2 := expr.Marshal(byte(f.family), b[i])
		if err1 != nil || err2 != nil || !bytes.Equal(ea, eb) {
			return false
		}
	}
	return true
}
