package overlay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/family"
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

// AuditConfig is what an audit needs to know of this node, for one family.
type AuditConfig struct {
	Family family.Family
	Own    netip.Prefix // this node's subnet of the family; invalid when unknown
	// Public is this node's public address of the family, as its lease
	// publishes it: host-gw's routes are on the interface that holds it,
	// the underlay subnetd found. Invalid when unknown.
	Public netip.Addr
}

// ErrNoPublicIP says an audit needed this node's public IP (host-gw, to
// find the underlay) and AuditConfig had none.
var ErrNoPublicIP = errors.New("this node's public IP is unknown")

// Audit compares what backend s programmed in the calling thread's
// namespace for one family with what its Reconcile would program for
// peers: the same computation and diff, read only, for tools that explain
// an overlay (cnictl doctor). where names what was read, for reports, also
// along an error: the vxlan device ("flannel.1"), or "host-gw via <the
// underlay>" ("host-gw" while the underlay is unknown).
func (s Settings) Audit(c AuditConfig, peers []Peer) (where string, d Drift, err error) {
	if s, err = s.WithDefaults(); err != nil {
		return s.Type, Drift{}, err
	}
	k, err := openKernel(c.Family)
	if err != nil {
		return s.Type, Drift{}, err
	}
	defer k.close()
	where, t, err := kinds[s.Type].audit(k, s, c)
	if err != nil {
		return where, Drift{}, err
	}
	skips := &skipLog{peers: peers, reasons: map[netip.Prefix]string{}}
	want, _ := wanted(t, peers, slog.New(skips))
	have, err := k.read(t)
	if err != nil {
		return where, Drift{}, err
	}
	d = describe(diff(want, have), want, have, where, t.dev)
	d.Skipped = skips.reasons
	return where, d, nil
}

// auditVXLAN reads the target of the family's vxlan device (Device.Reconcile's):
// the underlay of DirectRouting is the device's own.
func auditVXLAN(k *kernel, s Settings, c AuditConfig) (string, target, error) {
	name := DefaultName(s.VNI, c.Family)
	t := target{family: c.Family, own: c.Own.Masked()}
	l, err := k.h.LinkByName(name)
	if link.IsNotFound(err) {
		return name, t, fmt.Errorf("%s: %w", name, ErrNoDevice)
	}
	if err != nil {
		return name, t, fmt.Errorf("looking up %s: %w", name, err)
	}
	t.dev = l.Attrs().Index
	if c.Family == family.IPv4 {
		if t.nexthops, err = k.nexthops(); err != nil {
			return name, t, err
		}
	}
	if len(l.Attrs().HardwareAddr) == 6 {
		t.ownMAC = [6]byte(l.Attrs().HardwareAddr)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return name, t, nil
	}
	if ip, ok := netip.AddrFromSlice(vx.SrcAddr); ok {
		t.self = []netip.Addr{ip.Unmap()}
	}
	if s.DirectRouting {
		ul, err := k.h.LinkByIndex(vx.VtepDevIndex)
		if err != nil {
			return name, t, fmt.Errorf("the underlay of %s (index %d): %w", name, vx.VtepDevIndex, err)
		}
		if t.underlay, t.direct, err = onLinkPrefixes(k, ul.Attrs().Name); err != nil {
			return name, t, err
		}
	}
	return name, t, nil
}

// auditHostGW reads the target of host-gw (HostGW.Reconcile's) on the
// interface that holds this node's public IP.
func auditHostGW(k *kernel, _ Settings, c AuditConfig) (string, target, error) {
	const name = "host-gw"
	if !c.Public.IsValid() {
		return name, target{}, ErrNoPublicIP
	}
	ul, err := UnderlayOf(c.Public)
	if err != nil {
		return name, target{}, err
	}
	t, err := hostGWTarget(k, c.Family, c.Own, ul)
	return name + " via " + ul, t, err
}

// UnderlayOf names the interface that holds ip, this node's public IP: the
// underlay subnetd found, on which host-gw routes.
func UnderlayOf(ip netip.Addr) (string, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return "", fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", fmt.Errorf("the interface of %s: %w", ip, err)
			}
			return l.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("no interface holds this node's public IP %s", ip)
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
