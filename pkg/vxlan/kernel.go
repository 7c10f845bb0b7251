package vxlan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernel reads and writes one family's tables over one netlink socket, so
// that thousands of writes pay no per-call socket set-up.
type kernel struct {
	h      *netlink.Handle // reads
	w      *writer         // writes, batched
	family int
	once   sync.Once // close runs once: by Device.Close or by the collector
}

// openKernel opens a socket in the calling thread's network namespace.
func openKernel(v6 bool) (*kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	w, err := openWriter()
	if err != nil {
		h.Close()
		return nil, err
	}
	k := &kernel{h: h, w: w, family: netlink.FAMILY_V4}
	if v6 {
		k.family = netlink.FAMILY_V6
	}
	return k, nil
}

func (k *kernel) close() {
	k.once.Do(func() {
		k.h.Close()
		k.w.close()
	})
}

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

// rtmsg is a route request's fixed part (struct rtmsg): ours are unicast
// routes of the main table. It carries the route's scope: a delete must
// name it.
func (r route) rtmsg(family int) []byte {
	b := []byte{byte(family), byte(r.dst.Bits()), 0, 0, unix.RT_TABLE_MAIN, byte(r.proto), byte(r.scope), unix.RTN_UNICAST}
	var flags uint32
	if r.onlink {
		flags = unix.RTNH_F_ONLINK
	}
	return binary.NativeEndian.AppendUint32(b, flags)
}

func (r route) attrs() []attr {
	a := []attr{{unix.RTA_DST, r.dst.Addr().AsSlice()}}
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

// apply makes the plan's writes in order, in batches (writer). A failed
// write does not stop the others: each peer's entries stand alone.
func (k *kernel) apply(p plan, dev int) error {
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
	for _, r := range p.addRoute {
		w.add(entry{format: "adding route %s via %s", args: []any{r.dst, r.gw}},
			unix.RTM_NEWROUTE, set, r.rtmsg(k.family), r.attrs()...)
	}
	for _, r := range p.delRoute {
		w.add(entry{format: "deleting route %s via %s", args: []any{r.dst, r.gw}, del: true},
			unix.RTM_DELROUTE, 0, r.rtmsg(k.family), r.attrs()...)
	}
	for _, n := range p.delNeigh {
		w.add(entry{format: "deleting neighbour %s", args: []any{n.ip}, del: true},
			unix.RTM_DELNEIGH, 0, ndmsg(k.family, dev, 0), neighAttrs(n.ip, n.mac)...)
	}
	for _, f := range p.delFDB {
		w.add(entry{format: "deleting FDB entry %s dst %s", args: []any{macString(f.mac), f.dst}, del: true},
			unix.RTM_DELNEIGH, 0, ndmsg(unix.AF_BRIDGE, dev, unix.NTF_SELF), neighAttrs(f.dst, f.mac)...)
	}
	return w.flush()
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
