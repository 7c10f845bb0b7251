package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
)

// ErrNoDevice says the vxlan device is gone; EnsureDevice (Backend.Ensure) recreates it.
var ErrNoDevice = errors.New("vxlan device does not exist; call Ensure to recreate it")

// Stats counts what one Reconcile found and did.
type Stats struct {
	Peers   int // peers programmed (valid ones)
	Direct  int // of which routed directly on the underlay (DirectRouting, host-gw)
	Skipped int // malformed or colliding peers, logged and ignored
	Added   int // entries created or rewritten
	Deleted int // stale entries removed
}

// Writes is the number of netlink writes made: zero when nothing changed.
func (s Stats) Writes() int { return s.Added + s.Deleted }

// plus is the sum of two counts, of two devices say.
func (s Stats) plus(o Stats) Stats {
	return Stats{Peers: s.Peers + o.Peers, Direct: s.Direct + o.Direct, Skipped: s.Skipped + o.Skipped,
		Added: s.Added + o.Added, Deleted: s.Deleted + o.Deleted}
}

// Reconcile programs peers (this device's family) and removes what belongs
// to peers no longer listed: one dump of each kernel table, then only the
// difference is written, so peers that merely renewed their leases cost no
// write. Malformed peers are logged and skipped. The errors of failed writes
// are joined; the other writes are still made. A device gone since EnsureDevice
// gives ErrNoDevice. Calls for one device (Reconcile, Update) must be
// serialized by the caller.
func (d *Device) Reconcile(peers []Peer) (Stats, error) {
	d.model, d.book = nil, nil
	k, err := d.kernel()
	if err != nil {
		return Stats{}, err
	}
	dev, err := k.h.LinkByName(d.cfg.Name)
	if link.IsNotFound(err) {
		return Stats{}, fmt.Errorf("%s: %w", d.cfg.Name, ErrNoDevice)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("looking up %s: %w", d.cfg.Name, err)
	}
	t := target{
		family: d.cfg.family(), own: d.cfg.Subnet, ownMAC: [6]byte(d.cfg.MAC), self: []netip.Addr{d.cfg.LocalIP},
		dev: dev.Attrs().Index, underlay: d.underlay,
	}
	if t.nexthops, err = d.nexthops(k); err != nil {
		return Stats{}, err
	}
	if d.cfg.DirectRouting {
		if t.underlay, t.direct, err = onLinkPrefixes(k, d.cfg.Underlay); err != nil {
			return Stats{}, err
		}
	}
	s, want, err := reconcile(k, t, peers, d.cfg.Name, d.cfg.logger())
	if err == nil {
		d.t, d.model, d.book = t, &want, newBook(t, peers, want, s.Skipped)
	}
	return s, err
}

// nexthops reports whether the device's routes go through nexthop objects:
// IPv4 ones, on a kernel that has them. A kernel without them is logged
// when first found.
func (d *Device) nexthops(k *kernel) (bool, error) {
	if d.cfg.family() != family.IPv4 {
		return false, nil
	}
	asked := k.nh != 0
	ok, err := k.nexthops()
	if err == nil && !ok && !asked {
		d.cfg.logger().Info("this kernel has no nexthop objects (Linux before 5.3): peer routes are plain routes, slower to program by the thousand",
			"device", d.cfg.Name)
	}
	return ok, err
}

// Update programs peers like Reconcile, but diffs them against what the last
// Reconcile or Update of this device wrote instead of dumping the kernel: a
// lease event then costs its own writes, and a plan computed from the peers
// that changed alone (see book). Without such a record (no Reconcile yet, or
// a write failed since) it is a Reconcile. Entries someone else changed in
// the kernel are only seen by the next Reconcile, which callers run
// periodically and whenever the device changes.
func (d *Device) Update(peers []Peer) (Stats, error) {
	if d.model == nil {
		return d.Reconcile(peers)
	}
	if d.book != nil {
		if p, commit, ok := d.book.delta(peers); ok {
			created, err := d.k.apply(p, d.t.dev)
			if err != nil {
				d.model, d.book = nil, nil // the kernel is unknown again: the next call dumps it
				return Stats{Added: p.adds(), Deleted: p.deletes()}, err
			}
			s := commit(created)
			s.Added, s.Deleted = p.adds(), p.deletes()
			return s, nil
		}
	}
	want, skipped := wanted(d.t, peers, d.cfg.logger())
	p := diff(want, *d.model)
	s := count(d.t, want, p, skipped)
	created, err := d.k.apply(p, d.t.dev)
	if err != nil {
		d.model, d.book = nil, nil
		return s, err
	}
	want.adopt(created)
	d.model, d.book = &want, newBook(d.t, peers, want, skipped)
	return s, nil
}

// reconcile is the part shared with host-gw: compute, dump, diff, write. It
// returns the wanted tables, which the kernel holds when it succeeds.
func reconcile(k *kernel, t target, peers []Peer, name string, log *slog.Logger) (Stats, tables, error) {
	want, skipped := wanted(t, peers, log)
	have, err := k.read(t)
	if err != nil {
		return Stats{Skipped: skipped}, want, err
	}
	p := diff(want, have)
	s := count(t, want, p, skipped)
	if s.Writes() > 0 {
		log.Debug("reconciling peers", "backend", name, "peers", s.Peers, "adds", s.Added, "deletes", s.Deleted)
	}
	created, err := k.apply(p, t.dev)
	want.adopt(created)
	return s, want, err
}

func count(t target, want tables, p plan, skipped int) Stats {
	s := Stats{Peers: len(want.routes), Skipped: skipped, Added: p.adds(), Deleted: p.deletes()}
	for _, r := range want.routes {
		if r.link != t.dev {
			s.Direct++
		}
	}
	return s
}

// onLinkPrefixes returns the underlay's index and its addresses of the
// family with their prefix lengths: peers inside them are reachable without
// a router.
func onLinkPrefixes(k *kernel, name string) (int, []netip.Prefix, error) {
	ul, err := k.h.LinkByName(name)
	if err != nil {
		return 0, nil, fmt.Errorf("looking up the underlay %s: %w", name, err)
	}
	addrs, err := link.RetryDump(func() ([]netlink.Addr, error) { return k.h.AddrList(ul, k.family) })
	if err != nil {
		return 0, nil, fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	prefixes := []netip.Prefix{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		prefixes = append(prefixes, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return ul.Attrs().Index, prefixes, nil
}
