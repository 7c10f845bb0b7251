package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
)

// kernel reads and writes one family's tables over one netlink socket, so
// that thousands of writes pay no per-call socket set-up.
type kernel struct {
	h      *netlink.Handle // reads of links, addresses, neighbours
	w      *writer         // writes, batched; route and nexthop dumps
	family int             // f.Netlink() of openKernel's f
	nh     int8            // nexthop objects: 0 not asked yet, 1 the kernel has them, -1 not
	once   sync.Once       // close runs once: by Device.Close or by the collector
}

// openKernel opens a socket in the calling thread's network namespace for
// the tables of family f.
func openKernel(f family.Family) (*kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	w, err := openWriter()
	if err != nil {
		h.Close()
		return nil, err
	}
	return &kernel{h: h, w: w, family: f.Netlink()}, nil
}

func (k *kernel) close() {
	k.once.Do(func() {
		k.h.Close()
		k.w.close()
	})
}

// read dumps the family's routes once, and with t.dev > 0 the device's
// neighbours and FDB and the namespace's nexthops. Ours are: routes of the
// main table with RouteProtocol, on any link, and every route through
// t.dev but the kernel's own; with t.nexthops, the nexthops on t.dev with
// RouteProtocol. A route on a nexthop object is read with the nexthop's
// gateway and device, from the nexthop dump: the route dump carries them
// too only while net.ipv4.nexthop_compat_mode is on.
func (k *kernel) read(t target) (tables, error) {
	have := newTables(0)
	var nhs map[uint32]knexthop
	if t.dev > 0 {
		ok, err := k.nexthops()
		if ok {
			nhs, err = k.dumpNexthops()
		}
		if err != nil {
			return have, err
		}
	}
	routes, err := link.RetryDump(func() ([]kroute, error) { return k.dumpRoutes(k.family) })
	if err != nil {
		return have, fmt.Errorf("listing routes: %w", err)
	}
	have.busy = map[uint32]bool{}
	for _, kr := range routes {
		r, ok := kr.resolve(nhs)
		switch {
		case !ok:
		case kr.table == unix.RT_TABLE_MAIN && (r.proto == RouteProtocol || (t.dev > 0 && r.link == t.dev && r.proto != unix.RTPROT_KERNEL)):
			have.routes[r.dst] = r
		case r.nh != 0:
			have.busy[r.nh] = true
		}
	}
	if t.nexthops {
		have.keepNexthops(nhs, t.dev)
	}
	if t.dev == 0 {
		return have, nil
	}
	return have, k.readNeighbours(t.dev, have)
}

// readNeighbours adds the permanent neighbours and the FDB of dev to have.
func (k *kernel) readNeighbours(dev int, have tables) error {
	neighs, err := link.RetryDump(func() ([]netlink.Neigh, error) { return k.h.NeighList(dev, k.family) })
	if err != nil {
		return fmt.Errorf("listing neighbours: %w", err)
	}
	for _, n := range neighs {
		ip, ok := netip.AddrFromSlice(n.IP)
		if ok && len(n.HardwareAddr) == 6 && n.State&netlink.NUD_PERMANENT != 0 {
			have.neighs[ip.Unmap()] = neigh{ip: ip.Unmap(), mac: [6]byte(n.HardwareAddr)}
		}
	}
	entries, err := link.RetryDump(func() ([]netlink.Neigh, error) { return k.h.NeighList(dev, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("listing FDB entries: %w", err)
	}
	for _, n := range entries {
		ip, ok := netip.AddrFromSlice(n.IP)
		if ok && len(n.HardwareAddr) == 6 {
			have.fdb[fdb{mac: [6]byte(n.HardwareAddr), dst: ip.Unmap()}] = n.State&netlink.NUD_PERMANENT != 0
		}
	}
	return nil
}

// kroute is a route as the kernel dumps it.
type kroute struct {
	route
	table     uint32
	typ       uint8
	multipath bool
}

// dumpRoutes lists the routes of every table of family (AF_UNSPEC: both).
func (k *kernel) dumpRoutes(family int) ([]kroute, error) {
	var routes []kroute
	body := make([]byte, unix.SizeofRtMsg)
	body[0] = byte(family)
	err := k.w.dump(unix.RTM_GETROUTE, body, unix.RTM_NEWROUTE, func(data []byte) {
		if r, ok := parseRoute(data); ok {
			routes = append(routes, r)
		}
	})
	return routes, err
}

// parseRoute reads a route message (struct rtmsg, attributes).
func parseRoute(data []byte) (kroute, bool) {
	if len(data) < unix.SizeofRtMsg {
		return kroute{}, false
	}
	r := kroute{table: uint32(data[4]), typ: data[7]}
	r.proto, r.scope = int(data[5]), int(data[6])
	r.onlink = binary.NativeEndian.Uint32(data[8:])&unix.RTNH_F_ONLINK != 0
	f, _ := family.OfNetlink(int(data[0]))
	dst := f.Unspecified() // a default route has no RTA_DST
	eachAttr(data[unix.SizeofRtMsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.RTA_DST:
			dst = addrOf(v)
		case unix.RTA_GATEWAY:
			r.gw = addrOf(v)
		case unix.RTA_OIF:
			r.link = int(u32(v))
		case unix.RTA_TABLE:
			r.table = u32(v)
		case unix.RTA_MULTIPATH:
			r.multipath = true
		case rtaNhID:
			r.nh = u32(v)
		}
	})
	r.dst = netip.PrefixFrom(dst, int(data[1]))
	return r, r.dst.IsValid()
}

// resolve keeps single-path unicast routes but default routes (never a
// peer's), with the gateway, device and onlink flag of the nexthop object a
// route uses when nhs has it.
func (kr kroute) resolve(nhs map[uint32]knexthop) (route, bool) {
	if kr.multipath || kr.typ != unix.RTN_UNICAST || kr.dst.Bits() == 0 {
		return route{}, false
	}
	r := kr.route
	if n, found := nhs[r.nh]; found {
		if !n.single {
			return route{}, false // a group: many paths, or a blackhole
		}
		r.gw, r.link, r.onlink = n.gw, n.oif, n.onlink
	}
	return r, true
}

// rtmsg is a route request's fixed part (struct rtmsg): ours are unicast
// routes of the main table. It carries the route's scope: a delete must
// name it.
func (r route) rtmsg(family int) []byte {
	b := []byte{byte(family), byte(r.dst.Bits()), 0, 0, unix.RT_TABLE_MAIN, byte(r.proto), byte(r.scope), unix.RTN_UNICAST}
	var flags uint32
	if r.onlink && r.nh == 0 {
		flags = unix.RTNH_F_ONLINK
	}
	return binary.NativeEndian.AppendUint32(b, flags)
}

// attrs name the route's destination and next hop: its nexthop object, or
// its gateway and device (the kernel takes one or the other, also to find
// a route to delete).
func (r route) attrs() []attr {
	a := []attr{{unix.RTA_DST, r.dst.Addr().AsSlice()}}
	if r.nh != 0 {
		return append(a, attr{rtaNhID, binary.NativeEndian.AppendUint32(nil, r.nh)})
	}
	if r.gw.IsValid() {
		a = append(a, attr{unix.RTA_GATEWAY, r.gw.AsSlice()})
	}
	if r.link > 0 {
		a = append(a, attr{unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(r.link))})
	}
	return a
}

// ndmsg is a permanent neighbour or FDB request's fixed part (struct ndmsg).
func ndmsg(family, dev int, flags uint8) []byte {
	b := []byte{byte(family), 0, 0, 0}
	b = binary.NativeEndian.AppendUint32(b, uint32(dev))
	b = binary.NativeEndian.AppendUint16(b, netlink.NUD_PERMANENT)
	return append(b, flags, 0)
}

func neighAttrs(ip netip.Addr, mac [6]byte) []attr {
	return []attr{{unix.NDA_DST, ip.AsSlice()}, {unix.NDA_LLADDR, mac[:]}}
}

// apply makes the plan's writes in order, in batches (writer), and returns
// the ids the kernel gave the nexthops it created, by gateway. The
// nexthops' batch is sent, and their ids read, before the routes that use
// them are written: a route is never written with the id of a nexthop that
// failed to be made. A failed write does not stop the others: each peer's
// entries stand alone.
func (k *kernel) apply(p plan, dev int) (map[netip.Addr]uint32, error) {
	const set = unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	w := k.w
	for _, f := range p.addFDB {
		w.add(entry{format: "adding FDB entry %s dst %s", args: []any{macString(f.mac), f.dst}},
			unix.RTM_NEWNEIGH, set, ndmsg(unix.AF_BRIDGE, dev, unix.NTF_SELF), neighAttrs(f.dst, f.mac)...)
	}
	for _, n := range p.addNeigh {
		w.add(entry{format: "adding neighbour %s lladdr %s", args: []any{n.ip, macString(n.mac)}},
			unix.RTM_NEWNEIGH, set, ndmsg(k.family, dev, 0), neighAttrs(n.ip, n.mac)...)
	}
	created, err := k.addNexthops(p.addNH, dev)
	for _, r := range p.addRoute {
		if r.ownNH && r.nh == 0 {
			if r.nh = created[r.gw]; r.nh == 0 {
				continue // its nexthop failed, which err says
			}
		}
		w.add(entry{format: "adding route %s via %s", args: []any{r.dst, r.gw}},
			unix.RTM_NEWROUTE, set, r.rtmsg(k.family), r.attrs()...)
	}
	for _, r := range p.delRoute {
		w.add(entry{format: "deleting route %s via %s", args: []any{r.dst, r.gw}, del: true},
			unix.RTM_DELROUTE, 0, r.rtmsg(k.family), r.attrs()...)
	}
	for _, n := range p.delNH {
		w.add(entry{format: "deleting nexthop %d via %s", args: []any{n.id, n.gw}, del: true},
			unix.RTM_DELNEXTHOP, 0, make([]byte, sizeofNhmsg), nexthopID(n.id)...)
	}
	for _, n := range p.delNeigh {
		w.add(entry{format: "deleting neighbour %s", args: []any{n.ip}, del: true},
			unix.RTM_DELNEIGH, 0, ndmsg(k.family, dev, 0), neighAttrs(n.ip, n.mac)...)
	}
	for _, f := range p.delFDB {
		w.add(entry{format: "deleting FDB entry %s dst %s", args: []any{macString(f.mac), f.dst}, del: true},
			unix.RTM_DELNEIGH, 0, ndmsg(unix.AF_BRIDGE, dev, unix.NTF_SELF), neighAttrs(f.dst, f.mac)...)
	}
	return created, errors.Join(err, w.flush())
}

// addNexthops creates a nexthop of ours per gateway, without an id so that
// the kernel takes a free one, and sends them with the writes queued before
// them; it returns the ids the kernel echoed and the failed writes' errors.
func (k *kernel) addNexthops(gws []netip.Addr, dev int) (map[netip.Addr]uint32, error) {
	if len(gws) == 0 {
		return nil, nil
	}
	ids := make([]uint32, len(gws))
	for i, gw := range gws {
		k.w.add(entry{format: "adding nexthop via %s", args: []any{gw}, id: &ids[i]},
			unix.RTM_NEWNEXTHOP, unix.NLM_F_CREATE|unix.NLM_F_ECHO, nhmsg(k.family), nexthopAttrs(gw, dev)...)
	}
	err := k.w.flush()
	created := make(map[netip.Addr]uint32, len(gws))
	for i, gw := range gws {
		if ids[i] != 0 {
			created[gw] = ids[i]
		}
	}
	return created, err
}

// gone treats an entry that is already gone as deleted.
func gone(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// errorList joins errors but keeps only the first few: when the device
// vanishes mid-reconcile every one of thousands of writes fails alike.
type errorList struct {
	errs  []error
	extra int
}

const maxErrors = 8

func (l *errorList) add(err error, format string, args ...any) {
	if err == nil {
		return
	}
	if len(l.errs) == maxErrors {
		l.extra++
		return
	}
	l.errs = append(l.errs, fmt.Errorf(format+": %w", append(args, err)...))
}

func (l *errorList) err() error {
	if l.extra > 0 {
		l.errs = append(l.errs, fmt.Errorf("and %d more failed writes", l.extra))
	}
	return errors.Join(l.errs...)
}
