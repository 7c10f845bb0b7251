// Package ipam allocates addresses out of ranges of netip addresses. It knows
// nothing about files: reservations go through the Store interface, which
// pkg/ipam/disk implements with the reference host-local on-disk layout.
//
// Of the suite it imports only pkg/netconf (for its error codes), never
// pkg/ipam/disk or a plugin.
package ipam

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/cnisuite/cni/pkg/netconf"
)

// Range is a pool of addresses inside one subnet. Start and End are
// inclusive; Gateway is never handed out when it falls inside the pool.
type Range struct {
	Subnet  netip.Prefix
	Start   netip.Addr
	End     netip.Addr
	Gateway netip.Addr
}

// RangeSet is a list of ranges of one address family. An attachment gets one
// address per set, taken from whichever range of the set has room.
type RangeSet []Range

// RangeConfig is one range as written in a configuration: the keys of the
// reference host-local plugin. Empty strings mean "use the default".
type RangeConfig struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

// ParseAddr parses one address of a configuration. Zones and IPv4-mapped IPv6
// forms are refused or unmapped so that every address has one spelling, the
// one used to name its reservation file.
func ParseAddr(key, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, netconf.Invalid("%s %q is not an IP address; write e.g. 10.22.0.5 or fd00::5", key, s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, netconf.Invalid("%s %q has a zone; remove the %%%s suffix", key, s, a.Zone())
	}
	return a.Unmap(), nil
}

// Parse checks a configured range and fills in the defaults of the reference:
// the pool runs from network+1 to the last address (the IPv4 broadcast
// excluded) and the gateway is network+1.
func (c RangeConfig) Parse() (Range, error) {
	var r Range
	p, err := netip.ParsePrefix(strings.TrimSpace(c.Subnet))
	if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return r, netconf.Invalid("subnet %q is not a CIDR; write it as network/length, e.g. 10.22.0.0/16 or fd00:22::/64", c.Subnet)
	}
	if p.Masked() != p {
		return r, netconf.Invalid("subnet %s has host bits set; the network address for /%d is %s", p, p.Bits(), p.Masked())
	}
	if p.Bits() > p.Addr().BitLen()-2 {
		return r, netconf.Invalid("subnet %s is too small to allocate from; use at most /%d", p, p.Addr().BitLen()-2)
	}
	r.Subnet = p
	if r.Start, err = c.addrIn(p, "rangeStart", c.RangeStart, p.Addr().Next()); err != nil {
		return r, err
	}
	if r.End, err = c.addrIn(p, "rangeEnd", c.RangeEnd, lastAddr(p)); err != nil {
		return r, err
	}
	if r.Gateway, err = c.addrIn(p, "gateway", c.Gateway, p.Addr().Next()); err != nil {
		return r, err
	}
	if r.Start.Compare(r.End) > 0 {
		return r, netconf.Invalid("rangeStart %s is after rangeEnd %s in subnet %s; swap them", r.Start, r.End, p)
	}
	return r, nil
}

// addrIn parses an optional address that must lie inside p.
func (c RangeConfig) addrIn(p netip.Prefix, key, s string, def netip.Addr) (netip.Addr, error) {
	if strings.TrimSpace(s) == "" {
		return def, nil
	}
	a, err := ParseAddr(key, s)
	if err != nil {
		return a, err
	}
	if !p.Contains(a) {
		return a, netconf.Invalid("%s %s is outside subnet %s; pick an address inside it or fix the subnet", key, a, p)
	}
	return a, nil
}

// lastAddr is the last address of p; for IPv4 the one before the broadcast.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		hostBits := max(0, min(8, (i+1)*8-p.Bits()))
		b[i] |= byte(1<<hostBits - 1)
	}
	a, _ := netip.AddrFromSlice(b)
	if a.Is4() {
		return a.Prev()
	}
	return a
}

// Contains reports whether a is inside the pool (the gateway included).
func (r Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.Start.BitLen() && a.Compare(r.Start) >= 0 && a.Compare(r.End) <= 0
}

// Overlaps reports whether the pools of r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.Start.BitLen() == o.Start.BitLen() && r.Start.Compare(o.End) <= 0 && o.Start.Compare(r.End) <= 0
}

// String is the reference's spelling of a range, used in messages.
func (r Range) String() string { return r.Start.String() + "-" + r.End.String() }

// Size is the number of addresses the range can hand out, saturating at
// 2^64-1: large IPv6 pools never fill up in practice.
func (r Range) Size() uint64 {
	n := sub128(r.End, r.Start)
	if n != ^uint64(0) {
		n++
	}
	if r.Contains(r.Gateway) && n != ^uint64(0) {
		n--
	}
	return n
}

// sub128 returns b-a for a <= b, saturating at 2^64-1.
func sub128(b, a netip.Addr) uint64 {
	bb, ab := b.As16(), a.As16()
	var hi, lo [2]uint64
	for i := range 8 {
		hi[0], hi[1] = hi[0]<<8|uint64(bb[i]), hi[1]<<8|uint64(ab[i])
		lo[0], lo[1] = lo[0]<<8|uint64(bb[i+8]), lo[1]<<8|uint64(ab[i+8])
	}
	if hi[0] == hi[1] {
		return lo[0] - lo[1]
	}
	if hi[0]-hi[1] == 1 && lo[0] < lo[1] {
		return lo[0] - lo[1] // borrow: the difference still fits in 64 bits
	}
	return ^uint64(0)
}

// RangeFor returns the range of s whose pool holds a.
func (s RangeSet) RangeFor(a netip.Addr) (Range, bool) {
	for _, r := range s {
		if r.Contains(a) {
			return r, true
		}
	}
	return Range{}, false
}

// Overlaps reports the first pair of ranges of s and o that overlap.
func (s RangeSet) Overlaps(o RangeSet) (Range, Range, bool) {
	for _, r := range s {
		for _, q := range o {
			if r.Overlaps(q) {
				return r, q, true
			}
		}
	}
	return Range{}, Range{}, false
}

// String lists the ranges as the reference does ("a-b,c-d").
func (s RangeSet) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// ParseRangeSets validates configured range sets: each range on its own, one
// family per set, and no address in two ranges (within or across sets), since
// two pools sharing an address would hand it out twice.
func ParseRangeSets(cfg [][]RangeConfig) ([]RangeSet, error) {
	if len(cfg) == 0 {
		return nil, netconf.Invalid("no IP ranges specified; set ipam.ranges (e.g. [[{\"subnet\":\"10.22.0.0/16\"}]]) or ipam.subnet")
	}
	sets := make([]RangeSet, len(cfg))
	for i, rc := range cfg {
		if len(rc) == 0 {
			return nil, netconf.Invalid("range set %d is empty; give it at least one {\"subnet\": ...} or remove it", i)
		}
		for j, c := range rc {
			r, err := c.Parse()
			if err != nil {
				return nil, fmt.Errorf("range set %d, range %d: %w", i, j, err)
			}
			if j > 0 && r.Start.BitLen() != sets[i][0].Start.BitLen() {
				return nil, netconf.Invalid("range set %d mixes IPv4 and IPv6 (%s and %s); put each family in its own set", i, sets[i][0].Subnet, r.Subnet)
			}
			for _, prev := range sets[i] {
				if r.Overlaps(prev) {
					return nil, netconf.Invalid("range set %d: ranges %s and %s overlap; make their rangeStart/rangeEnd disjoint", i, prev, r)
				}
			}
			sets[i] = append(sets[i], r)
		}
		for k := range i {
			if a, b, ok := sets[k].Overlaps(sets[i]); ok {
				return nil, netconf.Invalid("range set %d (%s) overlaps range set %d (%s); every set needs its own addresses", k, a, i, b)
			}
		}
	}
	return sets, nil
}
