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
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
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

// maxAttempts bounds the read-plan-restore loop that concurrent writers
// can make fail.
const maxAttempts = 6

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
	err := h.restore(ctx, f, r.fastLines())
	if err == nil || errors.Is(err, iptables.ErrNotInstalled) || errors.Is(err, iptables.ErrXtablesLock) {
		return err
	}
	return h.transact(ctx, f, func(t *iptables.Table) []string {
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
		t, err := h.read(ctx, f)
		if err != nil {
			return err
		}
		var lines []string
		for _, w := range lacking(t, r.all()) {
			lines = append(lines, "-C "+w[0]+" "+w[1])
		}
		if len(lines) == 0 {
			return nil
		}
		err = h.restore(ctx, f, lines)
		var re *restoreError
		if errors.As(err, &re) && re.line != "" {
			return fmt.Errorf("%s nat table: rule %q is missing; DEL and ADD the attachment again to restore it", f.IPTables(), strings.TrimPrefix(re.line, "-C "))
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
	return eachFamily(func(f family.Family) error {
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
	return eachFamily(func(f family.Family) error {
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
	err := h.transact(ctx, f, func(t *iptables.Table) []string {
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

// transact reads the nat table, plans and restores, and starts over when
// the restore fails, which is what a concurrent writer causes.
func (h IPTables) transact(ctx context.Context, f family.Family, build func(*iptables.Table) []string) error {
	var err error
	for attempt := range maxAttempts {
		if attempt > 0 {
			nftconn.Backoff(attempt)
		}
		t, rerr := h.read(ctx, f)
		if rerr != nil {
			return rerr
		}
		lines := build(t)
		if len(lines) == 0 {
			return nil
		}
		// The lock was already waited for: another round would only wait again.
		if err = h.restore(ctx, f, lines); err == nil || errors.Is(err, iptables.ErrNotInstalled) || errors.Is(err, iptables.ErrXtablesLock) {
			return err
		}
	}
	return fmt.Errorf("port mapping rules not applied after %d attempts: %w", maxAttempts, err)
}

func (h IPTables) read(ctx context.Context, f family.Family) (*iptables.Table, error) {
	ts, err := iptables.Save(ctx, h.Run, f, "nat")
	if err != nil {
		return nil, err
	}
	return ts.Get("nat"), nil
}

// restoreError is a failed iptables-restore, with the line it rejected.
type restoreError struct {
	line string
	err  error
}

func (e *restoreError) Error() string {
	if e.line != "" {
		return fmt.Sprintf("%v (at %q)", e.err, e.line)
	}
	return e.err.Error()
}

func (e *restoreError) Unwrap() error { return e.err }

func (h IPTables) restore(ctx context.Context, f family.Family, lines []string) error {
	err := iptables.Restore(ctx, h.Run, f, map[string][]string{"nat": lines})
	if err == nil || errors.Is(err, iptables.ErrNotInstalled) || errors.Is(err, iptables.ErrXtablesLock) {
		return err
	}
	return &restoreError{err: err, line: iptables.FailedLine(err, lines)}
}

// eachFamily runs fn for both families in parallel and joins the errors.
func eachFamily(fn func(family.Family) error) error {
	fams := family.All()
	return concurrently(len(fams), func(i int) error { return fn(fams[i]) })
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
