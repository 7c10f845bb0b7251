package overlay

import (
	"cmp"
	"context"
	"fmt"
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
	Kind   string       // "route", "nexthop", "neigh" or "fdb"
	Subnet netip.Prefix // the peer subnet it serves; invalid when no route or neighbour tells
	Text   string       // as ip(8) and bridge(8) show it
	Fix    string       // the command that adds, rewrites or deletes it
}

// Drift is what a Reconcile of the same peers would write, found without
// writing: wanted entries the kernel lacks or holds differently, and entries
// of ours no peer wants.
type Drift struct {
	Missing []Entry
	Stale   []Entry
	// Skipped are the peers a Reconcile would skip (malformed, colliding,
	// this node's own address), by subnet, with the reason it logs.
	Skipped map[netip.Prefix]string
}

// AuditConfig names the device Audit reads and what Reconcile was given.
type AuditConfig struct {
	Name          string       // the vxlan device, e.g. flannel.1
	V6            bool         // the family of the device
	Own           netip.Prefix // this node's subnet; invalid when unknown
	DirectRouting bool         // peers on the underlay's link are routed directly, as DeviceConfig.DirectRouting
	// HostGW audits the host-gw backend instead (HostGW.Reconcile): routes
	// via the peers' public IPs on Underlay, no device.
	HostGW   bool
	Underlay string
}

// Audit compares the tables of a vxlan device (in the calling thread's
// namespace) with what Reconcile would program for peers: the same
// computation and diff, read only, for tools that explain an overlay
// (cnictl doctor). The underlay of DirectRouting is the device's own.
func Audit(c AuditConfig, peers []Peer) (Drift, error) {
	k, err := openKernel(c.V6)
	if err != nil {
		return Drift{}, err
	}
	defer k.close()
	t, err := c.target(k)
	if err != nil {
		return Drift{}, err
	}
	skips := &skipLog{peers: peers, reasons: map[netip.Prefix]string{}}
	want, _ := wanted(t, peers, slog.New(skips))
	have, err := k.read(t)
	if err != nil {
		return Drift{}, err
	}
	d := describe(diff(want, have), want, have, c.Name, t.dev)
	d.Skipped = skips.reasons
	return d, nil
}

// target is what Reconcile (or HostGW.Reconcile) computes its wanted
// entries against, read from the device (or the underlay).
func (c AuditConfig) target(k *kernel) (target, error) {
	t := target{v6: c.V6, own: c.Own.Masked()}
	var err error
	if c.HostGW {
		t.hostGW = true
		if t.underlay, t.direct, err = onLinkPrefixes(k, c.Underlay); err != nil {
			return t, fmt.Errorf("host-gw: %w", err)
		}
		for _, p := range t.direct {
			t.self = append(t.self, p.Addr())
		}
		return t, nil
	}
	l, err := k.h.LinkByName(c.Name)
	if link.IsNotFound(err) {
		return t, fmt.Errorf("%s: %w", c.Name, ErrNoDevice)
	}
	if err != nil {
		return t, fmt.Errorf("looking up %s: %w", c.Name, err)
	}
	t.dev = l.Attrs().Index
	if !c.V6 {
		if t.nexthops, err = k.nexthops(); err != nil {
			return t, err
		}
	}
	if len(l.Attrs().HardwareAddr) == 6 {
		t.ownMAC = [6]byte(l.Attrs().HardwareAddr)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return t, nil
	}
	if ip, ok := netip.AddrFromSlice(vx.SrcAddr); ok {
		t.self = []netip.Addr{ip.Unmap()}
	}
	if c.DirectRouting {
		ul, err := k.h.LinkByIndex(vx.VtepDevIndex)
		if err != nil {
			return t, fmt.Errorf("the underlay of %s (index %d): %w", c.Name, vx.VtepDevIndex, err)
		}
		if t.underlay, t.direct, err = onLinkPrefixes(k, ul.Attrs().Name); err != nil {
			return t, err
		}
	}
	return t, nil
}

// skipLog keeps the reasons wanted logs for the peers it skips, so that
// Audit reports them without a second copy of wanted's rules. wanted names
// a peer by Peer.String, which starts with its subnet.
type skipLog struct {
	peers   []Peer
	reasons map[netip.Prefix]string
}

func (h *skipLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *skipLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *skipLog) WithGroup(string) slog.Handler            { return h }

func (h *skipLog) Handle(_ context.Context, r slog.Record) error {
	var peer, reason string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "peer":
			peer = a.Value.String()
		case "reason":
			reason = a.Value.String()
		}
		return true
	})
	for _, p := range h.peers {
		if peer != "" && peer == p.String() {
			h.reasons[p.Subnet] = reason
		}
	}
	return nil
}

// describe spells a plan out, each entry with the subnet it serves (found
// through the route to that subnet and the neighbour of its VTEP), sorted
// so that reports are stable and their fixes work in turn: per subnet, the
// missing entries in the order they are added (a nexthop before its route)
// and the stale ones in the order they are deleted (a route before its
// nexthop). A nexthop the fixes create gets an id above any in use.
func describe(p plan, want, have tables, dev string, devIndex int) Drift {
	bySubnetAddr := map[netip.Addr]netip.Prefix{}
	byMAC := map[[6]byte]netip.Prefix{}
	for _, tb := range []tables{have, want} { // wanted entries win
		for dst := range tb.routes {
			bySubnetAddr[dst.Addr()] = dst
		}
		for ip, n := range tb.neighs {
			byMAC[n.mac] = bySubnetAddr[ip]
		}
	}
	var d Drift
	planned := map[netip.Addr]uint32{}
	slices.SortFunc(p.addNH, netip.Addr.Compare)
	for i, gw := range p.addNH {
		n := nexthop{id: have.maxID + 1 + uint32(i), gw: gw}
		planned[gw] = n.id
		d.Missing = append(d.Missing, Entry{"nexthop", bySubnetAddr[gw], n.text(dev) + " onlink",
			fmt.Sprintf("ip nexthop add %s onlink proto %d", n.text(dev), RouteProtocol)})
	}
	for _, r := range p.addRoute {
		fix := "ip route replace " + r.text(dev, devIndex) + fmt.Sprintf(" proto %d", r.proto)
		if r.ownNH {
			r.nh = cmp.Or(r.nh, planned[r.gw])
			fix = fmt.Sprintf("ip route replace %s nhid %d proto %d", r.dst, r.nh, r.proto)
		}
		d.Missing = append(d.Missing, Entry{"route", r.dst, r.text(dev, devIndex), fix})
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
	for _, n := range p.delNH {
		d.Stale = append(d.Stale, Entry{"nexthop", bySubnetAddr[n.gw], n.text(dev), fmt.Sprintf("ip nexthop del id %d", n.id)})
	}
	for _, n := range p.delNeigh {
		d.Stale = append(d.Stale, Entry{"neigh", bySubnetAddr[n.ip], n.text(dev), fmt.Sprintf("ip neigh del %s dev %s", n.ip, dev)})
	}
	for _, f := range p.delFDB {
		d.Stale = append(d.Stale, Entry{"fdb", byMAC[f.mac], f.text(dev), fmt.Sprintf("bridge fdb del %s dev %s dst %s self", macString(f.mac), dev, f.dst)})
	}
	sortEntries(d.Missing, []string{"fdb", "neigh", "nexthop", "route"})
	sortEntries(d.Stale, []string{"route", "nexthop", "neigh", "fdb"})
	return d
}

// sortEntries orders es by subnet, then kinds in the order given.
func sortEntries(es []Entry, kinds []string) {
	slices.SortFunc(es, func(a, b Entry) int {
		return cmp.Or(a.Subnet.Addr().Compare(b.Subnet.Addr()),
			cmp.Compare(slices.Index(kinds, a.Kind), slices.Index(kinds, b.Kind)), strings.Compare(a.Text, b.Text))
	})
}

// text names the device only when the route goes through it: a stale route
// of ours may be on the underlay (left by DirectRouting). A route on a
// nexthop object shows it as ip(8) does.
func (r route) text(dev string, devIndex int) string {
	s := r.dst.String()
	if r.nh != 0 {
		s += fmt.Sprintf(" nhid %d", r.nh)
	}
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

func (n nexthop) text(dev string) string {
	s := fmt.Sprintf("id %d", n.id)
	if n.gw.IsValid() {
		s += " via " + n.gw.String()
	}
	return s + " dev " + dev
}

func (n neigh) text(dev string) string {
	return fmt.Sprintf("%s lladdr %s dev %s nud permanent", n.ip, macString(n.mac), dev)
}

func (f fdb) text(dev string) string {
	return fmt.Sprintf("%s dev %s dst %s self permanent", macString(f.mac), dev, f.dst)
}
