package vxlan

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
)

// ErrNoDevice says the vxlan device is gone; Ensure recreates it.
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

// Reconcile programs peers (this device's family) and removes what belongs
// to peers no longer listed: one dump of each kernel table, then only the
// difference is written, so peers that merely renewed their leases cost no
// write. Malformed peers are logged and skipped. The errors of failed writes
// are joined; the other writes are still made. A device gone since Ensure
// gives ErrNoDevice. Calls for one device are meant to be serialized by the
// caller (overlapping ones converge, but their Stats overlap too).
func (d *Device) Reconcile(peers []Peer) (Stats, error) {
	k, err := openKernel(d.cfg.v6())
	if err != nil {
		return Stats{}, err
	}
	defer k.close()
	dev, err := k.h.LinkByName(d.cfg.Name)
	if link.IsNotFound(err) {
		return Stats{}, fmt.Errorf("%s: %w", d.cfg.Name, ErrNoDevice)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("looking up %s: %w", d.cfg.Name, err)
	}
	t := target{
		v6: d.cfg.v6(), own: d.cfg.Subnet, ownMAC: [6]byte(d.cfg.MAC), self: []netip.Addr{d.cfg.LocalIP},
		dev: dev.Attrs().Index, underlay: d.underlay,
	}
	if d.cfg.DirectRouting {
		if t.underlay, t.direct, err = onLinkPrefixes(k, d.cfg.Underlay); err != nil {
			return Stats{}, err
		}
	}
	return reconcile(k, t, peers, d.cfg.Name, d.cfg.logger())
}

// reconcile is the part shared with host-gw: compute, dump, diff, write.
func reconcile(k *kernel, t target, peers []Peer, name string, log *slog.Logger) (Stats, error) {
	want, skipped := wanted(t, peers, log)
	have, err := k.read(t.dev)
	if err != nil {
		return Stats{Skipped: skipped}, err
	}
	p := diff(want, have)
	s := Stats{Peers: len(want.routes), Skipped: skipped, Added: p.adds(), Deleted: p.deletes()}
	for _, r := range want.routes {
		if r.link != t.dev {
			s.Direct++
		}
	}
	if s.Writes() > 0 {
		log.Debug("reconciling peers", "backend", name, "peers", s.Peers, "adds", s.Added, "deletes", s.Deleted)
	}
	return s, k.apply(p, t.dev)
}

// onLinkPrefixes returns the underlay's index and its addresses of the
// family with their prefix lengths: peers inside them are reachable without
// a router.
func onLinkPrefixes(k *kernel, name string) (int, []netip.Prefix, error) {
	ul, err := k.h.LinkByName(name)
	if err != nil {
		return 0, nil, fmt.Errorf("looking up the underlay %s: %w", name, err)
	}
	addrs, err := retry("addresses of "+name, func() ([]netlink.Addr, error) { return k.h.AddrList(ul, k.family) })
	if err != nil {
		return 0, nil, err
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
