package bandwidth

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/family"
)

// The handles the reference gives its qdiscs, and the classes of its
// v1.5.x htb (0x30 is tc's "1:30"), so that a node can switch.
var (
	rootHandle    = netlink.MakeHandle(1, 0)
	ingressHandle = netlink.MakeHandle(0xffff, 0)
	unshapedClass = netlink.MakeHandle(1, 1)
	shapedClass   = netlink.MakeHandle(1, 0x30)
)

const (
	usPerSec = 1e6
	// latencyUs is the reference's: a queue holds 25 ms at the rate on top
	// of the burst.
	latencyUs = 25000
	// uncapped is the unshaped class's rate in bytes/s (800 Gbit/s), as
	// the reference v1.5.x sets it.
	uncapped = 100_000_000_000
	// unshapedQueue is the unshaped class's queue in packets: what a
	// device's default queue (txqueuelen 1000) holds.
	unshapedQueue = 1000
)

// bucket is a direction's token bucket in the kernel's units.
type bucket struct {
	rate   uint64 // bytes/s
	buffer uint32 // the burst as time at the rate, in ticks
	limit  uint32 // bytes queued: latencyUs at the rate plus the burst
}

// buckets computes a direction's bucket as the reference does, rounding
// at the same steps, so that CHECK agrees with the reference on what it
// added. Where the reference's arithmetic overflows 32 bits (the buffer
// past ~275 s of burst at the rate: containerd's 512 MB burst below 15.6
// Mbit/s; the queue with CRI-O's 4 GB burst), ours saturates; ref is what
// the reference programs there, which CHECK accepts too.
func buckets(d direction) (ours, ref bucket) {
	rate, burst := d.rate/8, d.burst/8
	us := float64(burst) * usPerSec / float64(rate)
	queued := float64(rate) * latencyUs / usPerSec
	tick := netlink.TickInUsec()
	ours = bucket{rate, sat32(float64(sat32(us)) * tick), sat32(float64(sat32(queued)) + float64(burst))}
	ref = bucket{rate, uint32(float64(uint32(us)) * tick), uint32(queued) + uint32(burst)}
	return ours, ref
}

// sat32 converts like uint32(x), saturating instead of overflowing.
func sat32(x float64) uint32 {
	if x >= math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(x)
}

// end is which address of a packet a subnet is matched against: the
// remote one, the source on the way to the pod, the destination from it.
type end int

const (
	src end = iota
	dst
)

// Per family: u32's protocol, and the priority its filters take (one per
// protocol, as u32 needs; the reference v1.5.x's values).
var (
	filterProto = [2]uint16{family.IPv4: unix.ETH_P_IP, family.IPv6: unix.ETH_P_IPV6}
	filterPrio  = [2]uint16{family.IPv4: 16, family.IPv6: 15}
	// addrOffset is where each end's address starts in the IP header.
	addrOffset = [2][2]int32{src: {family.IPv4: 12, family.IPv6: 8}, dst: {family.IPv4: 16, family.IPv6: 24}}
)

// shaper is what is installed on one link for one direction.
type shaper struct {
	bucket    bucket
	reference bucket // what the reference installs instead, see buckets
	scope     scope
	subnets   []netip.Prefix
	remote    end
}

// install puts s on the link at index as its root qdisc, registering its
// removal on undo as soon as it exists; classes, queues and filters go
// with it.
func (s shaper) install(undo *cniplugin.Undo, index int) error {
	var root netlink.Qdisc = &netlink.Tbf{QdiscAttrs: rootAttrs(index), Rate: s.bucket.rate, Limit: s.bucket.limit, Buffer: s.bucket.buffer}
	if s.scope != shapeAll {
		root = &netlink.Htb{QdiscAttrs: rootAttrs(index), Defcls: s.defaultClass() & 0xffff, Rate2Quantum: 10, Version: 3}
	}
	if err := netlink.QdiscAdd(root); err != nil {
		return fmt.Errorf("adding the root %s qdisc: %w", root.Type(), err)
	}
	undo.Push("remove the root qdisc", func() error { return netlink.QdiscDel(root) })
	if s.scope == shapeAll {
		return nil
	}
	return s.populateHTB(index)
}

func rootAttrs(index int) netlink.QdiscAttrs {
	return netlink.QdiscAttrs{LinkIndex: index, Handle: rootHandle, Parent: netlink.HANDLE_ROOT}
}

// defaultClass is where traffic no filter matches goes.
func (s shaper) defaultClass() uint32 {
	if s.scope == shapeListed {
		return unshapedClass
	}
	return shapedClass
}

// classes are the htb's two: the shaped one as the tbf would shape, and
// one that never limits.
func (s shaper) classes(index int) [2]*netlink.HtbClass {
	b := s.bucket
	return [2]*netlink.HtbClass{
		{ClassAttrs: classAttrs(index, shapedClass), Rate: b.rate, Ceil: b.rate, Buffer: b.buffer, Cbuffer: b.buffer, Quantum: quantum(b.rate)},
		{ClassAttrs: classAttrs(index, unshapedClass), Rate: uncapped, Ceil: uncapped, Quantum: quantum(uncapped)},
	}
}

func classAttrs(index int, handle uint32) netlink.ClassAttrs {
	return netlink.ClassAttrs{LinkIndex: index, Handle: handle, Parent: rootHandle}
}

// quantum is the kernel's default (rate over r2q 10) within the bounds it
// would clamp it to, given so that it does not log a warning per class.
func quantum(rate uint64) uint32 { return uint32(min(max(rate/10, 1000), 200000)) }

// populateHTB adds the classes, each with a queue of its own (a class's
// default queue holds txqueuelen packets: none on the ifb, made with
// txqueuelen 0 as the reference makes it, where it would drop everything),
// and the subnets' filters.
func (s shaper) populateHTB(index int) error {
	for _, cl := range s.classes(index) {
		if err := netlink.ClassAdd(cl); err != nil {
			return fmt.Errorf("adding htb class %s: %w", netlink.HandleStr(cl.Handle), err)
		}
	}
	if err := addFifo(index, shapedClass, "bfifo", s.bucket.limit); err != nil {
		return err
	}
	if err := addFifo(index, unshapedClass, "pfifo", unshapedQueue); err != nil {
		return err
	}
	for _, f := range s.filters(index) {
		if err := netlink.FilterAdd(f); err != nil {
			return fmt.Errorf("adding the filter of a subnet: %w", err)
		}
	}
	return nil
}

// addFifo adds a fifo queue of the given limit (bytes for bfifo, packets
// for pfifo) under parent; the netlink library sends no fifo options.
func addFifo(index int, parent uint32, kind string, limit uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWQDISC, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(&nl.TcMsg{Family: nl.FAMILY_ALL, Ifindex: int32(index), Parent: parent})
	req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated(kind)))
	req.AddData(nl.NewRtAttr(nl.TCA_OPTIONS, binary.NativeEndian.AppendUint32(nil, limit)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("adding the %s queue of class %s: %w", kind, netlink.HandleStr(parent), err)
	}
	return nil
}

// filters send each listed subnet's traffic to the class the default is
// not.
func (s shaper) filters(index int) []*netlink.U32 {
	class := shapedClass
	if s.scope == shapeAllButListed {
		class = unshapedClass
	}
	out := make([]*netlink.U32, 0, len(s.subnets))
	for _, p := range s.subnets {
		f := family.OfPrefix(p)
		u := &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: index, Parent: rootHandle, Priority: filterPrio[f], Protocol: filterProto[f]},
			ClassId:     class,
		}
		if keys := u32Keys(p, addrOffset[s.remote][f]); len(keys) > 0 {
			u.Sel = &netlink.TcU32Sel{Flags: nl.TC_U32_TERMINAL, Keys: keys}
		} // else a /0: no selector matches every packet of the family
		out = append(out, u)
	}
	return out
}

// u32Keys matches p's address at off, one key per 32-bit word the prefix
// covers.
func u32Keys(p netip.Prefix, off int32) []netlink.TcU32Key {
	addr := p.Addr().AsSlice()
	var keys []netlink.TcU32Key
	for i := 0; i < len(addr) && p.Bits() > 8*i; i += 4 {
		mask := ^uint32(0) << (32 - min(p.Bits()-8*i, 32))
		keys = append(keys, netlink.TcU32Key{Mask: mask, Val: binary.BigEndian.Uint32(addr[i:]) & mask, Off: off + int32(i)})
	}
	return slices.Clip(keys) // the library sends cap(keys) keys
}

// redirect sends what the pod sends (the ingress of the node side of its
// veth) to the ifb, through an ingress qdisc and a mirred action, as the
// reference does; its removal is registered on undo.
func redirect(undo *cniplugin.Undo, hostIndex, ifbIndex int) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: hostIndex, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
	if err := netlink.QdiscAdd(q); err != nil {
		return fmt.Errorf("adding the ingress qdisc: %w", err)
	}
	undo.Push("remove the ingress qdisc", func() error { return netlink.QdiscDel(q) })
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: hostIndex, Parent: ingressHandle, Priority: 1, Protocol: unix.ETH_P_ALL},
		Actions:     []netlink.Action{netlink.NewMirredAction(ifbIndex)},
	}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("adding the filter redirecting to the ifb: %w", err)
	}
	return nil
}
