package vxlan

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
)

// Entry is one route, neighbour or FDB entry of the overlay, in ip(8)'s
// words, with the command that would make the kernel right about it.
type Entry struct {
	Kind   string       // "route", "neigh" or "fdb"
	Subnet netip.Prefix // the peer subnet it serves; invalid for a stale neighbour or FDB entry
	Text   string       // as ip(8) and bridge(8) show it
	Fix    string       // the command that adds, rewrites or deletes it
}

// Drift is what a Reconcile of the same peers would write, found without
// writing: wanted entries the kernel lacks or holds differently, and entries
// of ours no peer wants.
type Drift struct {
	Missing []Entry
	Stale   []Entry
	Skipped int // peers a Reconcile would skip (malformed, colliding)
}

// Audit compares the tables of the vxlan device name (in the calling thread's
// namespace) of one family (v6) with what Reconcile would program for peers,
// own being this node's subnet (invalid when unknown). It is the same computation and diff as Reconcile, read only,
// for tools that explain an overlay (cnictl doctor). DirectRouting is not
// considered: every peer is expected through the device.
func Audit(name string, v6 bool, own netip.Prefix, peers []Peer) (Drift, error) {
	k, err := openKernel(v6)
	if err != nil {
		return Drift{}, err
	}
	defer k.close()
	l, err := k.h.LinkByName(name)
	if link.IsNotFound(err) {
		return Drift{}, fmt.Errorf("%s: %w", name, ErrNoDevice)
	}
	if err != nil {
		return Drift{}, fmt.Errorf("looking up %s: %w", name, err)
	}
	t := target{v6: v6, own: own.Masked(), dev: l.Attrs().Index}
	if len(l.Attrs().HardwareAddr) == 6 {
		t.ownMAC = [6]byte(l.Attrs().HardwareAddr)
	}
	if vx, ok := l.(*netlink.Vxlan); ok {
		if ip, ok := netip.AddrFromSlice(vx.SrcAddr); ok {
			t.self = []netip.Addr{ip.Unmap()}
		}
	}
	want, skipped := wanted(t, peers, slog.New(slog.NewTextHandler(io.Discard, nil)))
	have, err := k.read(t.dev)
	if err != nil {
		return Drift{}, err
	}
	return describe(diff(want, have), want, name, t.dev, skipped), nil
}

// describe spells a plan out, sorted so that reports are stable.
func describe(p plan, want tables, dev string, devIndex int, skipped int) Drift {
	bySubnetAddr := map[netip.Addr]netip.Prefix{}
	for dst := range want.routes {
		bySubnetAddr[dst.Addr()] = dst
	}
	byMAC := map[[6]byte]netip.Prefix{}
	for ip, n := range want.neighs {
		byMAC[n.mac] = bySubnetAddr[ip]
	}
	d := Drift{Skipped: skipped}
	for _, r := range p.addRoute {
		d.Missing = append(d.Missing, Entry{"route", r.dst, r.text(dev, devIndex), "ip route replace " + r.text(dev, devIndex) + fmt.Sprintf(" proto %d", r.proto)})
	}
	for _, n := range p.addNeigh {
		d.Missing = append(d.Missing, Entry{"neigh", bySubnetAddr[n.ip], n.text(dev), "ip neigh replace " + n.text(dev)})
	}
	for _, f := range p.addFDB {
		d.Missing = append(d.Missing, Entry{"fdb", byMAC[f.mac], f.text(dev), "bridge fdb replace " + f.text(dev)})
	}
	for _, r := range p.delRoute {
		d.Stale = append(d.Stale, Entry{"route", r.dst, r.text(dev, devIndex), "ip route del " + r.dst.String()})
	}
	for _, n := range p.delNeigh {
		d.Stale = append(d.Stale, Entry{"neigh", netip.Prefix{}, n.text(dev), fmt.Sprintf("ip neigh del %s dev %s", n.ip, dev)})
	}
	for _, f := range p.delFDB {
		d.Stale = append(d.Stale, Entry{"fdb", netip.Prefix{}, f.text(dev), fmt.Sprintf("bridge fdb del %s dev %s dst %s self", macString(f.mac), dev, f.dst)})
	}
	for _, es := range [][]Entry{d.Missing, d.Stale} {
		slices.SortFunc(es, func(a, b Entry) int {
			if c := a.Subnet.Addr().Compare(b.Subnet.Addr()); c != 0 {
				return c
			}
			return strings.Compare(a.Kind+a.Text, b.Kind+b.Text)
		})
	}
	return d
}

// text names the device only when the route goes through it: a stale route
// of ours may be on the underlay (left by DirectRouting).
func (r route) text(dev string, devIndex int) string {
	s := r.dst.String()
	if r.gw.IsValid() {
		s += " via " + r.gw.String()
	}
	if r.link == devIndex {
		s += " dev " + dev
	}
	if r.onlink {
		s += " onlink"
	}
	return s
}

func (n neigh) text(dev string) string {
	return fmt.Sprintf("%s lladdr %s dev %s nud permanent", n.ip, macString(n.mac), dev)
}

func (f fdb) text(dev string) string {
	return fmt.Sprintf("%s dev %s dst %s self permanent", macString(f.mac), dev, f.dst)
}
