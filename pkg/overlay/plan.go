package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/cnisuite/cni/pkg/family"
)

// route is a main-table unicast route in a form that compares with ==, so
// that what we write and what the kernel dumps back meet as equal values.
type route struct {
	dst    netip.Prefix
	gw     netip.Addr
	link   int
	onlink bool
	proto  int
	scope  int // ours are universe (0); found ones are deleted by their own
	// nh is the nexthop object the route uses (RTA_NH_ID), whose gateway,
	// device and onlink flag gw, link and onlink are; 0 for a plain route.
	nh uint32
	// ownNH marks a route through a nexthop of ours: wanted, one is created
	// for gw while nh is 0; found, nh is the one read keeps for gw.
	ownNH bool
}

// nexthop is a nexthop object of ours: a peer's gateway on the vxlan
// device, onlink, with RouteProtocol.
type nexthop struct {
	id uint32
	gw netip.Addr
}

// neigh is a permanent neighbour entry on the vxlan device.
type neigh struct {
	ip  netip.Addr
	mac [6]byte
}

// fdb is one remote of a vxlan FDB entry: frames for mac go to dst.
type fdb struct {
	mac [6]byte
	dst netip.Addr
}

// tables is one family's entries, wanted or found in the kernel. Routes are
// keyed by destination: the main table holds one route per destination and
// metric, and all of ours use the default metric.
type tables struct {
	routes map[netip.Prefix]route
	neighs map[netip.Addr]neigh // found entries that are not permanent are left out
	fdb    map[fdb]bool
	// nhs holds our nexthops' ids by gateway: found, the one read keeps per
	// gateway; wanted, those the routes use once the kernel gave them.
	nhs map[netip.Addr]uint32
	// Found only: our nexthops read does not keep (a second one for a
	// gateway, or one that is not an onlink gateway), the ids of nexthops
	// that routes we do not manage use (another table's), and the highest
	// id in use in the namespace.
	stray []nexthop
	busy  map[uint32]bool
	maxID uint32
}

// newTables makes empty tables with room for n peers: growing maps entry
// by entry costs a lease event with thousands of peers more than its writes.
func newTables(n int) tables {
	return tables{routes: make(map[netip.Prefix]route, n), neighs: make(map[netip.Addr]neigh, n), fdb: make(map[fdb]bool, n),
		nhs: make(map[netip.Addr]uint32, n)}
}

// plan is the writes that turn the kernel's tables into the wanted ones, in
// the order they are made: FDB, neighbour and nexthop before the route that
// uses them, so that no packet meets a half-programmed peer; deletes last,
// a route before its nexthop. Deleting the nexthop alone would take its
// routes with it, but silently (the kernel announces no RTM_DELROUTE, so
// programs following the routes miss it) and whoever's they are; a route is
// deleted by its own protocol, so only ours go.
type plan struct {
	addFDB   []fdb
	addNeigh []neigh
	addNH    []netip.Addr // by gateway: the kernel chooses the ids
	addRoute []route
	delRoute []route
	delNH    []nexthop
	delNeigh []neigh
	delFDB   []fdb
}

func (p plan) adds() int { return len(p.addFDB) + len(p.addNeigh) + len(p.addNH) + len(p.addRoute) }
func (p plan) deletes() int {
	return len(p.delRoute) + len(p.delNH) + len(p.delNeigh) + len(p.delFDB)
}

// diff compares wanted and found entries. A route, neighbour or FDB remote
// that differs is rewritten in place (the kernel's replace), so a changed
// peer costs one write per entry; found entries nobody wants are deleted.
// A wanted route through a nexthop of ours takes the one found for its
// gateway (want records it), or gets a new one; nexthops of ours no wanted
// route takes are deleted, unless a route we do not manage uses them.
func diff(want, have tables) plan {
	var p plan
	for dst, r := range want.routes {
		if r.ownNH {
			if r.nh = have.nhs[r.gw]; r.nh != 0 {
				want.nhs[r.gw] = r.nh
			}
			want.routes[dst] = r
		}
		if h, ok := have.routes[dst]; !ok || h != r {
			p.addRoute = append(p.addRoute, r)
			if r.ownNH && r.nh == 0 {
				p.addNH = append(p.addNH, r.gw)
			}
		}
	}
	for dst, r := range have.routes {
		if _, ok := want.routes[dst]; !ok {
			p.delRoute = append(p.delRoute, r)
		}
	}
	for gw, id := range have.nhs {
		if _, ok := want.nhs[gw]; !ok && !have.busy[id] {
			p.delNH = append(p.delNH, nexthop{id: id, gw: gw})
		}
	}
	for _, n := range have.stray {
		if !have.busy[n.id] {
			p.delNH = append(p.delNH, n)
		}
	}
	for ip, n := range want.neighs {
		if h, ok := have.neighs[ip]; !ok || h != n {
			p.addNeigh = append(p.addNeigh, n)
		}
	}
	for ip, n := range have.neighs {
		if _, ok := want.neighs[ip]; !ok {
			p.delNeigh = append(p.delNeigh, n)
		}
	}
	for f := range want.fdb {
		if !have.fdb[f] {
			p.addFDB = append(p.addFDB, f)
		}
	}
	for f := range have.fdb {
		if !want.fdb[f] {
			p.delFDB = append(p.delFDB, f)
		}
	}
	return p
}

// target is what the wanted entries depend on besides the peers.
type target struct {
	family   family.Family
	own      netip.Prefix   // our subnet: never a peer
	ownMAC   [6]byte        // our VTEP MAC: a peer with it would shadow us
	self     []netip.Addr   // our underlay addresses: a peer there is a stale lease of ours
	dev      int            // the vxlan device's index; 0 for host-gw
	direct   []netip.Prefix // the underlay's addresses with their prefix lengths, for DirectRouting and host-gw
	hostGW   bool           // every peer via its public IP, none through a device
	underlay int            // the underlay's index, for direct routes
	// nexthops: the routes through dev go through nexthop objects of ours
	// (IPv4 on a kernel that has them; see kernel.nexthops).
	nexthops bool
}

// wanted computes the entries for peers. Malformed peers, and peers that
// collide with an earlier one, are logged and skipped: one bad lease must not
// cut the node off from the others.
func wanted(t target, peers []Peer, log *slog.Logger) (tables, int) {
	want := newTables(len(peers))
	macs := make(map[[6]byte]netip.Prefix, len(peers))
	skipped := 0
	for _, p := range peers {
		err := t.check(p)
		if err == nil {
			err = want.add(t, p, macs)
		}
		if err != nil {
			log.Warn("skipping peer", "peer", p.String(), "reason", err.Error())
			skipped++
		}
	}
	return want, skipped
}

// check rejects what no lease of a working node can hold.
func (t target) check(p Peer) error {
	switch {
	case !p.Subnet.IsValid():
		return errors.New("no valid subnet")
	case family.OfPrefix(p.Subnet) != t.family:
		return fmt.Errorf("%s subnet on an %s device", family.OfPrefix(p.Subnet), t.family)
	case !p.PublicIP.IsValid() || p.PublicIP.IsUnspecified():
		return errors.New("no public IP")
	case family.Of(p.PublicIP) != t.family:
		return errors.New("public IP of the other family than the subnet")
	case p.PublicIP.IsMulticast() || p.PublicIP.IsLoopback():
		return errors.New("public IP is not a unicast address")
	case p.Subnet.Masked().Overlaps(t.own):
		return fmt.Errorf("subnet overlaps this node's %s", t.own)
	case slices.Contains(t.self, p.PublicIP):
		return errors.New("public IP is this node's own (a stale lease of this node?)")
	}
	if t.hostGW && !t.onLink(p.PublicIP) {
		return fmt.Errorf("public IP is not on the underlay's link, which host-gw needs; use the vxlan backend across routers")
	}
	return nil
}

func (t target) onLink(ip netip.Addr) bool {
	return slices.ContainsFunc(t.direct, func(p netip.Prefix) bool { return p.Contains(ip) })
}

// add puts the entries of one checked peer into want.
func (want tables) add(t target, p Peer, macs map[[6]byte]netip.Prefix) error {
	sn := p.Subnet.Masked()
	if _, dup := want.routes[sn]; dup {
		return errors.New("another peer has the same subnet")
	}
	if _, dup := want.neighs[sn.Addr()]; dup {
		return fmt.Errorf("another peer's subnet starts at %s too", sn.Addr())
	}
	if t.hostGW || (t.direct != nil && t.onLink(p.PublicIP)) {
		want.routes[sn] = route{dst: sn, gw: p.PublicIP, link: t.underlay, proto: RouteProtocol}
		return nil
	}
	if err := checkMAC(p.VtepMAC); err != nil {
		return fmt.Errorf("VTEP MAC: %w", err)
	}
	mac := [6]byte(p.VtepMAC)
	if mac == t.ownMAC {
		return errors.New("VTEP MAC is this node's own")
	}
	if other, dup := macs[mac]; dup {
		return fmt.Errorf("peer %s has the same VTEP MAC", other)
	}
	macs[mac] = sn
	want.routes[sn] = route{dst: sn, gw: sn.Addr(), link: t.dev, onlink: true, proto: RouteProtocol, ownNH: t.nexthops}
	want.neighs[sn.Addr()] = neigh{ip: sn.Addr(), mac: mac}
	want.fdb[fdb{mac: mac, dst: p.PublicIP}] = true
	return nil
}

// macString prints a MAC key the way ip(8) does.
func macString(m [6]byte) string { return net.HardwareAddr(m[:]).String() }
