package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/link"
)

// IPv4 peer routes through the vxlan device go through nexthop objects
// ("ip nexthop"), one per peer: the kernel gives every IPv4 route with a
// gateway of its own a fib_info, hashed by device but not by gateway, so
// that thousands of peer routes share one hash bucket and each insertion
// compares with every earlier one; a route on a nexthop object is hashed by
// the nexthop's id instead. IPv6 routes have no such shared hash (fib6) and
// stay plain routes.
//
// Nexthop ids are shared by the whole network namespace (FRR and others
// use them), so the kernel chooses ours: a create without an id takes a
// free one, echoed back (NLM_F_ECHO). Ours are those on our device with
// RouteProtocol; no other nexthop is ever used, changed or deleted.

// Attributes golang.org/x/sys/unix does not name.
const (
	rtaNhID = 30 // RTA_NH_ID: the nexthop object a route uses
	nhaFDB  = 11 // NHA_FDB: a nexthop for the bridge FDB, not for routes
)

const sizeofNhmsg = 8 // struct nhmsg

// knexthop is a nexthop object as the kernel dumps it.
type knexthop struct {
	gw     netip.Addr
	oif    int
	onlink bool
	proto  int
	single bool // one gateway or device: no group, blackhole, encapsulation or FDB use
}

// nexthops reports whether the kernel has nexthop objects (Linux 5.3 and
// later), asking it once: one without them refuses the dump.
func (k *kernel) nexthops() (bool, error) {
	if k.nh == 0 {
		_, err := k.dumpNexthops()
		switch {
		case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EAFNOSUPPORT):
			k.nh = -1
		case err != nil:
			return false, err
		default:
			k.nh = 1
		}
	}
	return k.nh > 0, nil
}

// dumpNexthops lists the namespace's nexthop objects by id.
func (k *kernel) dumpNexthops() (map[uint32]knexthop, error) {
	nhs, err := link.RetryDump(func() (map[uint32]knexthop, error) {
		nhs := map[uint32]knexthop{}
		err := k.w.dump(unix.RTM_GETNEXTHOP, make([]byte, sizeofNhmsg), unix.RTM_NEWNEXTHOP, func(data []byte) {
			if id, n, ok := parseNexthop(data); ok {
				nhs[id] = n
			}
		})
		return nhs, err
	})
	if err != nil {
		return nhs, fmt.Errorf("listing nexthops: %w", err)
	}
	return nhs, nil
}

// parseNexthop reads a nexthop message (struct nhmsg, attributes).
func parseNexthop(data []byte) (uint32, knexthop, bool) {
	if len(data) < sizeofNhmsg {
		return 0, knexthop{}, false
	}
	n := knexthop{proto: int(data[2]), onlink: binary.NativeEndian.Uint32(data[4:])&unix.RTNH_F_ONLINK != 0, single: true}
	var id uint32
	eachAttr(data[sizeofNhmsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.NHA_ID:
			id = u32(v)
		case unix.NHA_OIF:
			n.oif = int(u32(v))
		case unix.NHA_GATEWAY:
			n.gw = addrOf(v)
		case unix.NHA_GROUP, unix.NHA_BLACKHOLE, unix.NHA_ENCAP_TYPE, nhaFDB:
			n.single = false
		}
	})
	return id, n, id != 0
}

// u32 reads a 4-byte attribute; 0 for one of another size.
func u32(v []byte) uint32 {
	if len(v) != 4 {
		return 0
	}
	return binary.NativeEndian.Uint32(v)
}

func addrOf(v []byte) netip.Addr {
	ip, _ := netip.AddrFromSlice(v)
	return ip.Unmap()
}

// keepNexthops records the nexthops of ours among nhs in have: per gateway
// the one to keep (one a route of ours uses, else the lowest id), the others
// as strays, and marks the found routes that use a kept one.
func (have *tables) keepNexthops(nhs map[uint32]knexthop, dev int) {
	used := make(map[uint32]bool, len(have.routes))
	for _, r := range have.routes {
		used[r.nh] = r.nh != 0
	}
	better := func(a, b uint32) bool { return used[a] != used[b] && used[a] || used[a] == used[b] && a < b }
	for id, n := range nhs {
		have.maxID = max(have.maxID, id)
		if n.proto != RouteProtocol || n.oif != dev {
			continue // not ours
		}
		if !n.single || !n.onlink || !n.gw.Is4() {
			have.stray = append(have.stray, nexthop{id: id, gw: n.gw})
			continue
		}
		kept, dup := have.nhs[n.gw]
		switch {
		case !dup:
			have.nhs[n.gw] = id
		case better(id, kept):
			have.stray = append(have.stray, nexthop{id: kept, gw: n.gw})
			have.nhs[n.gw] = id
		default:
			have.stray = append(have.stray, nexthop{id: id, gw: n.gw})
		}
	}
	for dst, r := range have.routes {
		if r.nh != 0 && have.nhs[r.gw] == r.nh {
			r.ownNH = true
			have.routes[dst] = r
		}
	}
}

// adopt records in t (wanted tables just written) the ids the kernel gave
// the nexthops created for its routes.
func (t tables) adopt(created map[netip.Addr]uint32) {
	if len(created) == 0 {
		return
	}
	for dst, r := range t.routes {
		if id, ok := created[r.gw]; ok && r.ownNH && r.nh == 0 {
			r.nh = id
			t.routes[dst] = r
			t.nhs[r.gw] = id
		}
	}
}

// nhmsg is the fixed part of a request creating a nexthop of ours (struct
// nhmsg): RouteProtocol, and onlink, since the peer's gateway is in no
// subnet of the device's (which holds a /32).
func nhmsg(family int) []byte {
	return binary.NativeEndian.AppendUint32([]byte{byte(family), 0, RouteProtocol, 0}, unix.RTNH_F_ONLINK)
}

func nexthopAttrs(gw netip.Addr, dev int) []attr {
	return []attr{{unix.NHA_GATEWAY, gw.AsSlice()}, {unix.NHA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(dev))}}
}

func nexthopID(id uint32) []attr {
	return []attr{{unix.NHA_ID, binary.NativeEndian.AppendUint32(nil, id)}}
}
