package hostport

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
	"github.com/cnisuite/cni/pkg/netns"
)

// IPTables installs the portmap plugin's rules with iptables. Each ADD,
// DEL or GC is one transaction per address family, the two families in
// parallel: an iptables-restore --noflush, or for the common DEL on
// iptables-nft one nft transaction over netlink. An ADD first tries a
// transaction that asserts the shared chains instead of reading the
// table, so the common ADD forks once per family; GC and the uncommon DEL
// read the table once.
type IPTables struct {
	Run   iptables.Runner // nil: the real binaries
	quick quickDel        // nil: nftQuickDel; tests set it
}

// Add installs the mappings of c towards each container address (at most
// one per family, with its prefix length). A repeated ADD replaces the
// attachment's rules.
func (h IPTables) Add(ctx context.Context, c *Conf, addrs []netip.Prefix) error {
	if err := c.validTag(); err != nil {
		return netconf.Invalid("%w", err)
	}
	return concurrently(len(addrs), func(i int) error { return h.addFamily(ctx, c, addrs[i]) })
}

func (h IPTables) addFamily(ctx context.Context, c *Conf, container netip.Prefix) error {
	f, r := family.OfPrefix(container), iptablesRules(c, container)
	if len(r.rules) == 0 {
		return nil // every mapping is bound to a host IP of the other family
	}
	err := iptables.RestoreTable(ctx, h.Run, f, "nat", r.fastLines())
	if err == nil || iptables.Final(err) {
		return err
	}
	return iptables.Transact(ctx, h.Run, f, "nat", "port mapping rules", func(t *iptables.Table) []string {
		p := newPlan(t)
		p.ensurePlumbing(r)
		p.dropAttachment(c.Attachment, true)
		p.EnsureChain(r.chain)
		p.Lines = append(p.Lines, r.appendLines()...)
		return p.Lines
	})
}

// Check verifies every rule of the attachment and the shared rules it
// relies on: one iptables-save per family, each rule looked up by its key
// (specKey) in an index of what the save listed, so that the cost grows
// with the number of rules. One -C per rule made iptables-nft scan the
// chain for each (2000 mappings: 18 s; 10000: 23 min). The rules not found
// by key, which an iptables that spells a rule in a way specKey does not
// foresee may cause, are asked of iptables with -C lines, which compare
// meaning, in one restore.
func (h IPTables) Check(ctx context.Context, c *Conf, addrs []netip.Prefix) error {
	return concurrently(len(addrs), func(i int) error {
		f, r := family.OfPrefix(addrs[i]), iptablesRules(c, addrs[i])
		if len(r.rules) == 0 {
			return nil
		}
		ts, err := iptables.Save(ctx, h.Run, f, "nat")
		if err != nil {
			return err
		}
		t := ts.Get("nat")
		var lines []string
		for _, w := range lacking(t, r.all()) {
			lines = append(lines, "-C "+w[0]+" "+w[1])
		}
		if len(lines) == 0 {
			return nil
		}
		err = iptables.RestoreTable(ctx, h.Run, f, "nat", lines)
		var re *iptables.RestoreError
		if errors.As(err, &re) && re.Line != "" {
			return fmt.Errorf("%s nat table: rule %q is missing; DEL and ADD the attachment again to restore it", f.IPTables(), strings.TrimPrefix(re.Line, "-C "))
		}
		return err
	})
}

// Del removes the attachment's rules in both families, found by their
// tags, so it needs neither the mappings nor the container's addresses.
// The shared chains go when no other attachment uses them.
func (h IPTables) Del(ctx context.Context, c *Conf, _ []netip.Prefix) error {
	quick := h.quick
	if quick == nil {
		quick = nftQuickDel
	}
	defer lockSweeps()()
	return iptables.EachFamily(func(f family.Family) error {
		if quick(f, c.Attachment) {
			return nil
		}
		return h.sweep(ctx, f, func(p *plan) bool {
			changed := p.dropAttachment(c.Attachment, false)
			p.dropOldSNAT(c.Attachment)
			return changed
		})
	})
}

// GC removes the rules of every attachment of network that valid rejects,
// and the shared chains if nothing uses them any more.
func (h IPTables) GC(ctx context.Context, network string, valid Valid) error {
	defer lockSweeps()()
	return iptables.EachFamily(func(f family.Family) error {
		return h.sweep(ctx, f, func(p *plan) bool {
			for _, a := range staleAttachments(p.T, network, valid) {
				p.dropAttachment(a, false)
			}
			return true
		})
	})
}

// sweep runs a removal; when drop reports a change, unused shared chains
// go in the same transaction. Without iptables no rule can exist.
func (h IPTables) sweep(ctx context.Context, f family.Family, drop func(*plan) bool) error {
	err := iptables.Transact(ctx, h.Run, f, "nat", "port mapping rules", func(t *iptables.Table) []string {
		p := newPlan(t)
		if drop(p) {
			p.teardownShared()
		}
		return p.Lines
	})
	if errors.Is(err, iptables.ErrNotInstalled) {
		return nil
	}
	return err
}

// concurrently runs fn for 0..n-1 in parallel and joins the errors; each
// runs in the caller's network namespace (netns.Go): a caller inside
// netns.Do means the rules of that namespace.
func concurrently(n int, fn func(i int) error) error {
	fns := make([]func() error, n)
	for i := range fns {
		fns[i] = func() error { return fn(i) }
	}
	return netns.Concurrently(fns...)
}
