package vxlan

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernel reads and writes one family's tables over one netlink socket, so
// that thousands of writes pay no per-call socket set-up.
type kernel struct {
	h      *netlink.Handle
	family int
	once   sync.Once // close runs once: by Device.Close or by the collector
}

// openKernel opens a socket in the calling thread's network namespace.
func openKernel(v6 bool) (*kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	k := &kernel{h: h, family: netlink.FAMILY_V4}
	if v6 {
		k.family = netlink.FAMILY_V6
	}
	return k, nil
}

func (k *kernel) close() { k.once.Do(k.h.Close) }

// dumpRetries bounds the retries of a dump that raced with a change.
const dumpRetries = 5

// retry repeats a dump that the kernel reported as interrupted: since
// netlink v1.3 such a dump returns partial data with ErrDumpInterrupted.
func retry[T any](what string, fn func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		if v, err = fn(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		return v, fmt.Errorf("listing %s: %w", what, err)
	}
	return v, nil
}

// read dumps the family's main table once, and with dev > 0 the device's
// neighbours and FDB. Ours are: routes with RouteProtocol, on any link, and
// every route through dev but the kernel's own.
func (k *kernel) read(dev int) (tables, error) {
	have := newTables(0)
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	routes, err := retry("routes", func() ([]netlink.Route, error) {
		return k.h.RouteListFiltered(k.family, filter, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return have, err
	}
	for _, nr := range routes {
		r, ok := fromNetlinkRoute(nr)
		if ok && (r.proto == RouteProtocol || (dev > 0 && r.link == dev && r.proto != unix.RTPROT_KERNEL)) {
			have.routes[r.dst] = r
		}
	}
	if dev == 0 {
		return have, nil
	}
	neighs, err := retry("neighbours", func() ([]netlink.Neigh, error) { return k.h.NeighList(dev, k.family) })
	if err != nil {
		return have, err
	}
	for _, n := range neighs {
		ip, ok := netip.AddrFromSlice(n.IP)
		if ok && len(n.HardwareAddr) == 6 && n.State&netlink.NUD_PERMANENT != 0 {
			have.neighs[ip.Unmap()] = neigh{ip: ip.Unmap(), mac: [6]byte(n.HardwareAddr)}
		}
	}
	entries, err := retry("FDB entries", func() ([]netlink.Neigh, error) { return k.h.NeighList(dev, unix.AF_BRIDGE) })
	if err != nil {
		return have, err
	}
	for _, n := range entries {
		ip, ok := netip.AddrFromSlice(n.IP)
		if ok && len(n.HardwareAddr) == 6 {
			have.fdb[fdb{mac: [6]byte(n.HardwareAddr), dst: ip.Unmap()}] = n.State&netlink.NUD_PERMANENT != 0
		}
	}
	return have, nil
}

// fromNetlinkRoute keeps single-path unicast routes with a destination.
func fromNetlinkRoute(nr netlink.Route) (route, bool) {
	if nr.Dst == nil || len(nr.MultiPath) > 0 || nr.Type != unix.RTN_UNICAST {
		return route{}, false
	}
	ip, ok := netip.AddrFromSlice(nr.Dst.IP)
	if !ok {
		return route{}, false
	}
	ones, _ := nr.Dst.Mask.Size()
	gw, _ := netip.AddrFromSlice(nr.Gw)
	return route{
		dst:    netip.PrefixFrom(ip.Unmap(), ones),
		gw:     gw.Unmap(),
		link:   nr.LinkIndex,
		onlink: nr.Flags&int(netlink.FLAG_ONLINK) != 0,
		proto:  int(nr.Protocol),
		scope:  int(nr.Scope),
	}, true
}

func (r route) netlink() *netlink.Route {
	nr := &netlink.Route{
		LinkIndex: r.link,
		Dst:       &net.IPNet{IP: r.dst.Addr().AsSlice(), Mask: net.CIDRMask(r.dst.Bits(), r.dst.Addr().BitLen())},
		Protocol:  netlink.RouteProtocol(r.proto),
		Table:     unix.RT_TABLE_MAIN,
		Scope:     netlink.Scope(r.scope), // a delete must name the route's scope
	}
	if r.gw.IsValid() {
		nr.Gw = r.gw.AsSlice()
	}
	if r.onlink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

func (n neigh) netlink(dev, family int) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: dev, Family: family, State: netlink.NUD_PERMANENT, IP: n.ip.AsSlice(), HardwareAddr: n.mac[:]}
}

func (f fdb) netlink(dev int) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: dev, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		IP: f.dst.AsSlice(), HardwareAddr: f.mac[:],
	}
}

// apply makes the plan's writes in order. A failed write does not stop the
// others: each peer's entries stand alone.
func (k *kernel) apply(p plan, dev int) error {
	var errs errorList
	for _, f := range p.addFDB {
		errs.add(k.h.NeighSet(f.netlink(dev)), "adding FDB entry %s dst %s", macString(f.mac), f.dst)
	}
	for _, n := range p.addNeigh {
		errs.add(k.h.NeighSet(n.netlink(dev, k.family)), "adding neighbour %s lladdr %s", n.ip, macString(n.mac))
	}
	for _, r := range p.addRoute {
		errs.add(k.h.RouteReplace(r.netlink()), "adding route %s via %s", r.dst, r.gw)
	}
	for _, r := range p.delRoute {
		errs.add(gone(k.h.RouteDel(r.netlink())), "deleting route %s via %s", r.dst, r.gw)
	}
	for _, n := range p.delNeigh {
		errs.add(gone(k.h.NeighDel(n.netlink(dev, k.family))), "deleting neighbour %s", n.ip)
	}
	for _, f := range p.delFDB {
		errs.add(gone(k.h.NeighDel(f.netlink(dev))), "deleting FDB entry %s dst %s", macString(f.mac), f.dst)
	}
	return errs.err()
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
