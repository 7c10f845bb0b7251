package ipam

import (
	"errors"
	"fmt"
	"iter"
	"net/netip"

	"github.com/cnisuite/cni/pkg/netconf"
)

// ErrExhausted is wrapped by the error of an allocation that found every
// address of its range set reserved.
var ErrExhausted = errors.New("every address is reserved")

// Allocation is an address handed out: Address carries the subnet's length.
type Allocation struct {
	Address netip.Prefix
	Gateway netip.Addr
}

// Allocator hands out the addresses of one range set.
type Allocator struct {
	Set   RangeSet
	Index int // position of the set in the configuration; names its round-robin note
	Store Store
}

// Allocate reserves an address for the claim: requested when it is valid,
// otherwise the next free one after the last reserved (round-robin, so a
// crash-looping container does not get a just-released address back).
func (a *Allocator) Allocate(c Claim, requested netip.Addr) (Allocation, error) {
	if requested.IsValid() {
		return a.allocateRequested(c, requested)
	}
	// The spec forbids a second ADD of an attachment without a DEL; an
	// address already held in this set means the runtime lost track of one.
	owner := c.Owner
	held, err := a.Store.ByOwner(owner)
	if err != nil {
		return Allocation{}, err
	}
	for _, h := range held {
		if _, ok := a.Set.RangeFor(h); ok {
			return Allocation{}, fmt.Errorf("%s is already reserved for %s in range set %d (%s); the attachment was added before without a DEL: run DEL for it first", h, owner, a.Index, a.Set)
		}
	}
	last, err := a.Store.LastReserved(a.Index)
	if err != nil {
		return Allocation{}, err
	}
	for addr, r := range a.Set.walk(last) {
		ok, err := a.Store.Reserve(addr, c, a.Index)
		if err != nil {
			return Allocation{}, err
		}
		if ok {
			return Allocation{Address: netip.PrefixFrom(addr, r.Subnet.Bits()), Gateway: r.Gateway}, nil
		}
	}
	return Allocation{}, fmt.Errorf("range set %d (%s): %w", a.Index, a.Set, ErrExhausted)
}

func (a *Allocator) allocateRequested(c Claim, addr netip.Addr) (Allocation, error) {
	r, ok := a.Set.RangeFor(addr)
	if !ok {
		return Allocation{}, netconf.Invalid("requested IP %s is not in range set %d (%s); request an address inside it", addr, a.Index, a.Set)
	}
	if addr == r.Gateway {
		return Allocation{}, netconf.Invalid("requested IP %s is the gateway of subnet %s; request another address", addr, r.Subnet)
	}
	ok, err := a.Store.Reserve(addr, c, a.Index)
	if err != nil {
		return Allocation{}, err
	}
	if !ok {
		res, found, err := a.Store.Lookup(addr)
		switch {
		case err == nil && found && res.Corrupt != nil:
			return Allocation{}, netconf.Invalid("requested IP %s is blocked: %v", addr, res.Corrupt)
		case err == nil && found:
			return Allocation{}, netconf.Invalid("requested IP %s is already reserved for %s; DEL that attachment first or request another address", addr, res.Owner)
		}
		return Allocation{}, netconf.Invalid("requested IP %s is already reserved for another attachment; DEL that attachment first or request another address", addr)
	}
	return Allocation{Address: netip.PrefixFrom(addr, r.Subnet.Bits()), Gateway: r.Gateway}, nil
}

// walk yields every address of s that may be handed out, with its range,
// starting after last when last is in s (else at the first rangeStart),
// wrapping around once and never yielding a gateway.
func (s RangeSet) walk(last netip.Addr) iter.Seq2[netip.Addr, Range] {
	return func(yield func(netip.Addr, Range) bool) {
		if len(s) == 0 {
			return
		}
		i, cur := 0, netip.Addr{}
		for j, r := range s {
			if r.Contains(last) {
				i, cur = j, last
				break
			}
		}
		next := func() {
			switch {
			case !cur.IsValid():
				cur = s[i].Start
			case cur == s[i].End:
				i = (i + 1) % len(s)
				cur = s[i].Start
			default:
				cur = cur.Next()
			}
		}
		next()
		for first := cur; ; {
			if cur != s[i].Gateway && !yield(cur, s[i]) {
				return
			}
			if next(); cur == first {
				return
			}
		}
	}
}

// Full reports whether every address s may hand out is in reserved.
func (s RangeSet) Full(reserved []Reservation) bool {
	var capacity, used uint64
	for _, r := range s {
		capacity = satAdd(capacity, r.Size())
	}
	seen := make(map[netip.Addr]bool, len(reserved))
	for _, res := range reserved {
		r, ok := s.RangeFor(res.Addr)
		if ok && res.Addr != r.Gateway && !seen[res.Addr] {
			seen[res.Addr] = true
			used++
		}
	}
	return used >= capacity
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}
