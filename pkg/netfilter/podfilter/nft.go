package podfilter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// NFTables writes the firewall's rules in the suite's own nftables table
// in the current network namespace: every ADD, DEL and GC is one netlink
// transaction covering both families, which the kernel applies whole or
// not at all. The table and its chains stay when the last pod goes, as the
// reference's iptables chains do: they hold the admin's policy and chain.
//
// An accept ends only this table's FORWARD chain: a drop in another
// table's base chain at the forward hook (iptables' FORWARD policy among
// them) still drops the packet, so the backend is the firewall when the
// admin sets the drop policy on this table's FORWARD.
type NFTables struct{}

// Add installs c's rules in one transaction that also creates what is
// missing of the layout and replaces the attachment's earlier rules, so a
// repeated ADD converges. A table that does not exist yet is created
// exclusively: of two first ADDs, the second fails, reads again and finds
// the layout in place instead of adding it twice.
func (NFTables) Add(_ context.Context, c *Conf) error {
	if err := c.ValidTag(); err != nil {
		return netconf.Invalid("%w", err)
	}
	if len(c.Addrs) == 0 {
		return nil // nothing to accept, and no family to isolate, as with iptables
	}
	return nftconn.Transact(func(conn *nftconn.Conn) (bool, error) {
		st, err := readNFT(conn, layout)
		if err != nil {
			return false, err
		}
		st.ensure(conn, c)
		if !c.accepts() {
			return true, nil
		}
		if err := conn.DelRules(st.tagged(isTag(c.Tag()))); err != nil {
			return false, err
		}
		for _, a := range c.Addrs {
			for _, r := range nftPodRules(a, c.Tag()) {
				conn.AddRule(r.rule())
			}
		}
		return true, nil
	})
}

// ensure queues what c relies on that st lacks.
func (st *nftState) ensure(conn *nftconn.Conn, c *Conf) {
	if !st.exists {
		conn.CreateTable(NFTTable())
	}
	chains := []*nftables.Chain{nftBase()}
	if c.accepts() {
		chains = append(chains, nftChain(forwardChain), nftChain(c.admin()))
	}
	if c.Isolation != nil {
		chains = append(chains, nftChain(stage1Chain), nftChain(stage2Chain))
	}
	for _, ch := range chains {
		if !st.chains[ch.Name] {
			conn.AddChain(ch)
		}
	}
	if c.accepts() {
		if !st.jumps("FORWARD", forwardChain) {
			conn.AddRule(nftRule{chain: "FORWARD", exprs: jump(forwardChain), comment: forwardComment}.rule())
		}
		if !st.jumps(forwardChain, c.admin()) {
			conn.InsertRule(nftRule{chain: forwardChain, exprs: jump(c.admin()), comment: adminComment}.rule())
		}
	}
	if c.Isolation != nil {
		if !st.jumps("FORWARD", stage1Chain) {
			conn.InsertRule(nftRule{chain: "FORWARD", exprs: jump(stage1Chain), comment: isolationComment}.rule())
		}
		for _, r := range nftIsolation(c.Isolation) {
			if !st.holds(r) {
				conn.AddRule(r.rule())
			}
		}
	}
}

// Del removes the attachment's rules, found by their tag; no table or no
// rule is success.
func (NFTables) Del(_ context.Context, a Attachment) error { return nftSweep(isTag(a.Tag())) }

// GC removes the rules of every attachment of network that valid rejects.
func (NFTables) GC(_ context.Context, network string, valid Valid) error {
	return nftSweep(stale(network, valid))
}

// nftSweep deletes the pod rules pick chooses, in one transaction. A node
// without nftables has no rules to delete.
func nftSweep(pick func(string) bool) error {
	err := nftconn.Transact(func(conn *nftconn.Conn) (bool, error) {
		st, err := readNFT(conn, podsOnly)
		if err != nil {
			return false, err
		}
		gone := st.tagged(pick)
		return len(gone) > 0, conn.DelRules(gone)
	})
	if nftconn.Absent(err) {
		return nil
	}
	return err
}

// Check verifies the layout c relies on and every rule of the attachment,
// from one stable read with the rules decoded.
func (NFTables) Check(_ context.Context, c *Conf) error {
	if len(c.Addrs) == 0 {
		return nil
	}
	conn, err := nftconn.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := readNFT(conn, whole)
	if err != nil {
		return err
	}
	return st.check(c)
}

func (st *nftState) check(c *Conf) error {
	var want []nftRule
	missing := func(what string) error {
		return fmt.Errorf("nftables table inet %s: %s is missing; DEL and ADD the attachment again to restore it", nftTableName, what)
	}
	if !st.exists {
		return missing("the table")
	}
	if c.accepts() {
		if !st.jumps("FORWARD", forwardChain) || !st.jumps(forwardChain, c.admin()) || !st.chains[c.admin()] {
			return missing("the jump from FORWARD to " + forwardChain + ", or from there to " + c.admin())
		}
		for _, a := range c.Addrs {
			want = append(want, nftPodRules(a, c.Tag())...)
		}
	}
	if c.Isolation != nil {
		if !st.jumps("FORWARD", stage1Chain) {
			return missing("the jump from FORWARD to " + stage1Chain)
		}
		want = append(want, nftIsolation(c.Isolation)...)
	}
	for i, r := range want {
		if !st.holds(r) {
			return missing(fmt.Sprintf("rule %d of the attachment, in chain %s", i+1, r.chain))
		}
	}
	return nil
}

// nftState is one stable read of the table. Decoding a rule costs ~15 µs
// and keeps the read's window open (see nftconn.Stable): CNI-FORWARD's
// rules, two per pod, are decoded for CHECK only.
type nftState struct {
	exists bool
	chains map[string]bool
	raw    map[string][]nftconn.RawRule
	rules  map[string][]*nftables.Rule // decoded
}

// depth is how much of the table a read decodes.
type depth uint8

const (
	podsOnly depth = iota // CNI-FORWARD's rules, encoded: what DEL and GC delete
	layout                // and the other chains' rules, decoded: what ADD completes
	whole                 // and CNI-FORWARD's decoded too: what CHECK compares
)

// readNFT reads the table as one stable view, to depth d.
func readNFT(conn *nftconn.Conn, d depth) (st *nftState, err error) {
	err = conn.Stable(func() (err error) { st, err = readNFTOnce(conn, d); return err })
	return st, err
}

func readNFTOnce(conn *nftconn.Conn, d depth) (*nftState, error) {
	st := &nftState{chains: map[string]bool{}, raw: map[string][]nftconn.RawRule{}, rules: map[string][]*nftables.Rule{}}
	_, err := conn.ListTableOfFamily(nftTableName, nftables.TableFamilyINet)
	if errors.Is(err, unix.ENOENT) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading nftables table inet %s: %w", nftTableName, err)
	}
	st.exists = true
	names, err := conn.DumpChains(NFTTable())
	if err != nil {
		return nil, fmt.Errorf("listing the chains of nftables table inet %s: %w", nftTableName, err)
	}
	for _, n := range names {
		st.chains[n] = true
	}
	if st.chains[forwardChain] {
		if st.raw[forwardChain], err = conn.DumpRules(NFTTable(), forwardChain); err != nil {
			return nil, fmt.Errorf("listing nftables chain %s: %w", forwardChain, err)
		}
	}
	for _, ch := range []string{"FORWARD", stage1Chain, stage2Chain, forwardChain} {
		if !st.chains[ch] || d == podsOnly || (ch == forwardChain && d != whole) {
			continue
		}
		if st.rules[ch], err = conn.GetRules(NFTTable(), nftChain(ch)); err != nil {
			return nil, fmt.Errorf("listing nftables chain %s: %w", ch, err)
		}
	}
	return st, nil
}

// tagged are the rules of CNI-FORWARD whose comment pick chooses, for
// deletion by handle.
func (st *nftState) tagged(pick func(string) bool) []*nftables.Rule {
	var out []*nftables.Rule
	for _, r := range st.raw[forwardChain] {
		if rule := r.Rule(NFTTable()); pick(nftconn.RuleComment(rule)) {
			out = append(out, rule)
		}
	}
	return out
}

// jumps tells whether a rule of chain jumps to target: from the decoded
// rules, or from the encoded ones by the target's name (see
// nftconn.JumpsInto).
func (st *nftState) jumps(chain, target string) bool {
	if rules, ok := st.rules[chain]; ok {
		return slices.ContainsFunc(rules, func(r *nftables.Rule) bool {
			if len(r.Exprs) == 0 {
				return false
			}
			v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict)
			return ok && v.Kind == expr.VerdictJump && v.Chain == target
		})
	}
	name := append([]byte(target), 0)
	return slices.ContainsFunc(st.raw[chain], func(r nftconn.RawRule) bool { return bytes.Contains(r.Exprs, name) })
}

// holds tells whether a decoded rule of r's chain has r's expressions and
// comment. The family only picks how a few expressions encode, none of
// those the backend writes.
func (st *nftState) holds(r nftRule) bool {
	return slices.ContainsFunc(st.rules[r.chain], func(x *nftables.Rule) bool {
		return nftconn.RuleComment(x) == r.comment && nftconn.SameExprs(family.IPv4, x.Exprs, r.exprs)
	})
}
