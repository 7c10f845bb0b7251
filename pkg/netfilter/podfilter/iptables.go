package podfilter

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

// IPTables writes the firewall's rules with iptables, in the filter table
// of each family the pod has addresses in, the families in parallel. An
// ADD is one iptables-restore per family that asserts the shared rules
// (-C) and appends the pod's, once a netlink read of iptables-nft's
// CNI-FORWARD has shown that the attachment has no rule there yet; it
// reads the table (iptables-save) and plans only when that fails: the
// first ADD of a node, legacy iptables, a repeated ADD. DEL and GC delete
// the tagged rules over netlink in one nft transaction per family on
// iptables-nft, with iptables-save and -restore otherwise.
type IPTables struct {
	Run iptables.Runner // nil: the real binaries
	// Quick, when set, replaces the netlink path (used with the real
	// binaries only); tests set it.
	Quick QuickSweep
}

// QuickSweep deletes the rules of CNI-FORWARD whose comment pick chooses
// in one family without running iptables; with refs it leaves the
// family to iptables when the chain holds an untagged rule, which may be
// the reference's for the pod. It reports whether it is done.
type QuickSweep func(f family.Family, pick func(comment string) bool, refs bool) bool

func (h IPTables) quick() QuickSweep {
	switch {
	case h.Quick != nil:
		return h.Quick
	case h.Run == nil:
		return nftQuickSweep
	}
	return func(family.Family, func(string) bool, bool) bool { return false }
}

// Add installs c's rules in each family of its addresses, in one
// transaction per family. When one family fails, those that succeeded are
// taken back, what they created included, so a failed ADD leaves nothing.
func (h IPTables) Add(ctx context.Context, c *Conf) error {
	if err := c.ValidTag(); err != nil {
		return netconf.Invalid("%w", err)
	}
	fams := c.families()
	made := make([]created, len(fams))
	errs := make([]error, len(fams))
	fns := make([]func() error, len(fams))
	for i, f := range fams {
		fns[i] = func() error { made[i], errs[i] = h.addFamily(ctx, c, f); return nil }
	}
	_ = netns.Concurrently(fns...)
	err := errors.Join(errs...)
	if err == nil {
		return nil
	}
	for i, f := range fams {
		if errs[i] == nil {
			if uerr := h.undo(context.WithoutCancel(ctx), c, f, made[i]); uerr != nil {
				err = errors.Join(err, fmt.Errorf("taking back the %s rules: %w", f, uerr))
			}
		}
	}
	return err
}

func (h IPTables) addFamily(ctx context.Context, c *Conf, f family.Family) (created, error) {
	shared, pod := wanted(c, f)
	if len(pod) == 0 || h.quick()(f, isTag(c.Tag()), false) {
		err := iptables.RestoreTable(ctx, h.Run, f, "filter", append(lines("-C", shared), lines("-A", pod)...))
		if err == nil || iptables.Final(err) {
			return created{}, err
		}
	}
	defer lockPlans()()
	var made created
	err := iptables.Transact(ctx, h.Run, f, "filter", "firewall rules", func(t *iptables.Table) []string {
		p := newPlan(t)
		p.ensure(c, pod)
		made = p.made
		return p.Lines
	})
	return made, err
}

// undo takes back one family of an ADD: the pod's rules, then what it
// created, unless something relies on it now.
func (h IPTables) undo(ctx context.Context, c *Conf, f family.Family, made created) error {
	if err := h.delFamily(ctx, f, isTag(c.Tag()), nil); err != nil {
		return err
	}
	if len(made.chains)+len(made.rules) == 0 {
		return nil
	}
	defer lockPlans()()
	return iptables.Transact(ctx, h.Run, f, "filter", "firewall rules", func(t *iptables.Table) []string {
		p := newPlan(t)
		p.undo(made)
		return p.Lines
	})
}

// Check verifies, in each family of c's addresses, every rule c's ADD
// made or relies on, with one iptables-restore of -C lines: iptables
// compares each rule's meaning, and the first one missing is named.
func (h IPTables) Check(ctx context.Context, c *Conf) error {
	fams := c.families()
	fns := make([]func() error, len(fams))
	for i, f := range fams {
		fns[i] = func() error {
			shared, pod := wanted(c, f)
			checks := lines("-C", append(shared, pod...))
			err := iptables.RestoreTable(ctx, h.Run, f, "filter", checks)
			var re *iptables.RestoreError
			if errors.As(err, &re) && re.Line != "" {
				return fmt.Errorf("%s filter table: rule %q is missing; DEL and ADD the attachment again to restore it", f.IPTables(), strings.TrimPrefix(re.Line, "-C "))
			}
			return err
		}
	}
	return netns.Concurrently(fns...)
}

// Del removes the attachment's rules in both families, found by their
// tag, so it needs no address. addrs, when the prevResult gives them, also
// find the reference plugin's untagged rules of those addresses. The
// shared chains stay, as the reference leaves them.
func (h IPTables) Del(ctx context.Context, a Attachment, addrs []netip.Addr) error {
	return iptables.EachFamily(func(f family.Family) error {
		var refs []string
		for _, ad := range addrs {
			if family.Of(ad) == f {
				refs = append(refs, referenceRules(ad)...)
			}
		}
		return h.delFamily(ctx, f, isTag(a.Tag()), refs)
	})
}

// GC removes the rules of every attachment of network that valid rejects.
// The reference's rules name no attachment, so GC leaves them to DEL.
func (h IPTables) GC(ctx context.Context, network string, valid Valid) error {
	return iptables.EachFamily(func(f family.Family) error {
		return h.delFamily(ctx, f, stale(network, valid), nil)
	})
}

// stale picks the tags of network's attachments that valid rejects.
func stale(network string, valid Valid) func(string) bool {
	return func(c string) bool {
		a, ok := parseTag(c)
		return ok && a.Network == network && !valid(a.ContainerID, a.IfName)
	}
}

// delFamily deletes the picked rules and the reference's rules refs from
// CNI-FORWARD of family f: over netlink when it can, else by a restore.
// Without iptables no rule can exist.
func (h IPTables) delFamily(ctx context.Context, f family.Family, pick func(string) bool, refs []string) error {
	if h.quick()(f, pick, len(refs) > 0) {
		return nil
	}
	err := iptables.Transact(ctx, h.Run, f, "filter", "firewall rules", func(t *iptables.Table) []string {
		p := newPlan(t)
		p.drop(pick, refs)
		return p.Lines
	})
	if errors.Is(err, iptables.ErrNotInstalled) {
		return nil
	}
	return err
}
