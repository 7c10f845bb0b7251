package hostport

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// NFTables installs port mappings with nftables in the current network
// namespace: every change is one transaction covering both families,
// which the kernel applies whole or not at all.
type NFTables struct{}

// maxNFTComment is what the kernel keeps of a rule's user data (256 bytes,
// two of which are the comment's type and length).
const maxNFTComment = 254

// Add installs the mappings of c towards each container address (at most
// one per family). The transaction also (re)creates the layout and
// replaces the attachment's earlier rules, so a repeated ADD converges.
func (NFTables) Add(_ context.Context, c *Conf, addrs []netip.Prefix) error {
	if n := len(nftTag(c.Attachment)); n > maxNFTComment {
		return netconf.Invalid("the rule comment for network %q would be %d bytes, more than nftables' %d; shorten the network name", c.Network, n, maxNFTComment)
	}
	conds := make([][]expr.Any, len(addrs))
	for i, p := range addrs {
		var err error
		if conds[i], err = c.parsedConditions(family.OfPrefix(p)); err != nil {
			return err
		}
	}
	return nftconn.Transact(func(conn *nftconn.Conn) (bool, error) {
		changed := false
		for i, p := range addrs {
			f := family.OfPrefix(p)
			rules := nftRules(c, p, conds[i])
			if len(rules) == 0 {
				continue
			}
			st, err := read(conn, f)
			if err != nil {
				return false, err
			}
			ensureLayout(conn, f)
			if err := conn.DelRules(st.owned(c.Attachment)); err != nil {
				return false, err
			}
			for _, r := range rules {
				conn.AddRule(&nftables.Rule{Table: NFTTable(f), Chain: &nftables.Chain{Name: r.chain, Table: NFTTable(f)},
					Exprs: r.exprs, UserData: nftconn.Comment(nftTag(c.Attachment))})
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
func ensureLayout(conn *nftconn.Conn, f family.Family) {
	conn.AddTable(NFTTable(f))
	for _, ch := range nftChains(f) {
		conn.AddChain(ch)
	}
	for _, name := range []string{chainPre, chainOut, chainAll} {
		ch := &nftables.Chain{Name: name, Table: NFTTable(f)}
		conn.FlushChain(ch)
		for _, e := range skeletonRules()[name] {
			conn.AddRule(&nftables.Rule{Table: NFTTable(f), Chain: ch, Exprs: e})
		}
	}
}

// Del removes the attachment's rules in both families, found by their
// tags, and the whole table when no other rule is left in it.
func (NFTables) Del(_ context.Context, c *Conf, _ []netip.Prefix) error {
	return sweep(func(st *state) []*nftables.Rule { return st.owned(c.Attachment) })
}

// GC removes the rules of every attachment of network that valid rejects,
// and the table when nothing is left in it. Rules of the reference plugin
// name no network, so GC leaves them to DEL.
func (NFTables) GC(_ context.Context, network string, valid Valid) error {
	return sweep(func(st *state) []*nftables.Rule {
		var stale []*nftables.Rule
		for _, r := range st.attRules() {
			if t, ok := parseNFTTag(nftconn.RuleComment(r)); ok && t.Network == network && !valid(t.ContainerID, t.IfName) {
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
	defer lockSweeps()()
	return nftconn.Transact(func(conn *nftconn.Conn) (bool, error) {
		changed := false
		for _, f := range family.All() {
			st, err := read(conn, f)
			if err != nil {
				return false, err
			}
			if !st.exists {
				continue
			}
			gone := pick(st)
			if len(gone) == len(st.attRules()) && st.onlyOurs() {
				if err := conn.DelRules(st.rules[chainPre]); err != nil {
					return false, err
				}
				conn.DelTable(NFTTable(f))
				changed = true
				continue
			}
			if err := conn.DelRules(gone); err != nil {
				return false, err
			}
			changed = changed || len(gone) > 0
		}
		return changed, nil
	})
}

// Check verifies the layout and every rule of the attachment.
func (NFTables) Check(_ context.Context, c *Conf, addrs []netip.Prefix) error {
	conn, err := nftconn.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, p := range addrs {
		f := family.OfPrefix(p)
		conds, err := c.parsedConditions(f)
		if err != nil {
			return err
		}
		// Decoding keeps the window long, so a busy node's commits may
		// make this CHECK fail with code 11 (retry), never on a short view.
		var st *state
		err = conn.Stable(func() (err error) { st, err = readDecoded(conn, f); return err })
		if err != nil {
			return err
		}
		if err := st.check(nftTag(c.Attachment), nftRules(c, p, conds)); err != nil {
			return err
		}
	}
	return nil
}

// state is what a read found in one family's table.
type state struct {
	f      family.Family
	exists bool
	chains map[string]bool
	rules  map[string][]*nftables.Rule
}

// read takes f's chains and rules (their expressions left encoded) as one
// stable view: a rule missing from a dump that a commit interrupted would
// be one a DEL leaves behind.
func read(conn *nftconn.Conn, f family.Family) (st *state, err error) {
	err = conn.Stable(func() (err error) { st, err = readRaw(conn, f); return err })
	return st, err
}

// readRaw reads the table's chains and rules without decoding the rules'
// expressions; a table without chains counts as absent.
func readRaw(conn *nftconn.Conn, f family.Family) (*state, error) {
	st := &state{f: f, chains: map[string]bool{}, rules: map[string][]*nftables.Rule{}}
	names, err := conn.DumpChains(NFTTable(f))
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	for _, n := range names {
		st.chains[n] = true
	}
	if st.exists = len(names) > 0; !st.exists {
		return st, nil
	}
	rules, err := conn.DumpRules(NFTTable(f), "")
	if err != nil {
		return nil, fmt.Errorf("listing nftables rules: %w", err)
	}
	for _, r := range rules {
		st.rules[r.Chain] = append(st.rules[r.Chain], r.Rule(NFTTable(f)))
	}
	return st, nil
}

// readDecoded reads the table with every rule's expressions decoded, for
// CHECK, which compares them; unlike readRaw it takes a table without
// chains as present.
func readDecoded(conn *nftconn.Conn, f family.Family) (*state, error) {
	st := &state{f: f, chains: map[string]bool{}, rules: map[string][]*nftables.Rule{}}
	tables, err := conn.ListTablesOfFamily(nftconn.TableFamily(f))
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	st.exists = slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == nftTableName })
	if !st.exists {
		return st, nil
	}
	chains, err := conn.ListChainsOfTableFamily(nftconn.TableFamily(f))
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != nftTableName {
			continue
		}
		st.chains[ch.Name] = true
		rules, err := conn.GetRules(NFTTable(f), ch)
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
func (st *state) owned(att Attachment) []*nftables.Rule {
	var out []*nftables.Rule
	for _, r := range st.attRules() {
		c := nftconn.RuleComment(r)
		if t, ok := parseNFTTag(c); (ok && att.owns(t)) || c == att.ContainerID {
			out = append(out, r)
		}
	}
	return out
}

// onlyOurs tells whether the table holds nothing but the layout's chains,
// so that deleting it takes nobody else's.
func (st *state) onlyOurs() bool {
	for name := range st.chains {
		if !slices.ContainsFunc(nftChains(st.f), func(c *nftables.Chain) bool { return c.Name == name }) {
			return false
		}
	}
	return true
}

// check reports the first part of the layout or of want that is missing.
func (st *state) check(tag string, want []attRule) error {
	if !st.exists {
		return fmt.Errorf("nftables table %s %s is missing; DEL and ADD the attachment again", nftconn.FamilyName(nftconn.TableFamily(st.f)), nftTableName)
	}
	for _, ch := range nftChains(st.f) {
		if !st.chains[ch.Name] {
			return fmt.Errorf("nftables chain %s of table %s is missing; DEL and ADD the attachment again", ch.Name, nftTableName)
		}
	}
	for chain, rules := range skeletonRules() {
		for _, e := range rules {
			if !slices.ContainsFunc(st.rules[chain], func(r *nftables.Rule) bool { return nftconn.SameExprs(st.f, r.Exprs, e) }) {
				return fmt.Errorf("nftables chain %s lacks its jump to %s; DEL and ADD the attachment again", chain, e[len(e)-1].(*expr.Verdict).Chain)
			}
		}
	}
	have := st.tagged(tag, want)
	for i, w := range want {
		k, ok := exprKey(st.f, w.chain, w.exprs)
		if !ok || have[k] == 0 {
			return fmt.Errorf("rule %d of the attachment in nftables chain %s (%s) is missing or changed; DEL and ADD the attachment again", i+1, w.chain, nftconn.FamilyName(nftconn.TableFamily(st.f)))
		}
		have[k]-- // a rule wanted twice must be there twice
	}
	return nil
}

// tagged counts the rules tagged tag in the chains of want by exprKey: one
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
			if nftconn.RuleComment(r) != tag {
				continue
			}
			if k, ok := exprKey(st.f, w.chain, r.Exprs); ok {
				have[k]++
			}
		}
	}
	return have
}

// exprKey is a rule's chain and its expressions' netlink encoding, what
// nftconn.SameExprs compares; ok is false when an expression does not
// encode.
func exprKey(f family.Family, chain string, exprs []expr.Any) (key string, ok bool) {
	b := append([]byte(chain), 0)
	for _, e := range exprs {
		enc, err := expr.Marshal(byte(nftconn.TableFamily(f)), e)
		if err != nil {
			return "", false
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(enc)))
		b = append(b, enc...)
	}
	return string(b), true
}
