package overlay

import (
	"bytes"
	"net/netip"
)

// maxDelta bounds the peers an incremental update takes on: past it, one
// pass over every peer costs no more.
const maxDelta = 64

// book is what the last computation for one device accepted: every peer by
// its subnet as given, the entries they want (what the kernel holds once
// they are written), and which subnet holds each VTEP MAC. With it, a lease
// event's plan comes from the peers that changed alone. A book exists only
// while no peer is skipped: a skipped peer may become valid when another
// one goes, which only a computation over every peer finds. Nor does one
// exist while two accepted subnets start at the same address (a /24 and a
// /25, one of them routed directly): wanted accepts both in one order and
// skips one in the other.
type book struct {
	t      target
	in     map[netip.Prefix]*booked
	want   tables
	macs   map[[6]byte]netip.Prefix
	starts map[netip.Addr]bool // the accepted subnets' network addresses
	direct int                 // routes via a peer's public IP, for Stats
	gen    uint64
}

type booked struct {
	p   Peer
	gen uint64 // the last delta that found it in its input
}

// newBook records a computation of want from peers; nil when it skipped any.
func newBook(t target, peers []Peer, want tables, skipped int) *book {
	if skipped > 0 {
		return nil
	}
	b := &book{t: t, in: make(map[netip.Prefix]*booked, len(peers)), want: want,
		macs: make(map[[6]byte]netip.Prefix, len(peers)), starts: make(map[netip.Addr]bool, len(peers))}
	for _, p := range peers {
		b.in[p.Subnet] = &booked{p: p}
		sn := p.Subnet.Masked()
		if b.starts[sn.Addr()] {
			return nil
		}
		b.starts[sn.Addr()] = true
		if _, viaDevice := want.neighs[sn.Addr()]; viaDevice {
			b.macs[[6]byte(p.VtepMAC)] = sn
		} else {
			b.direct++
		}
	}
	return b
}

func samePeer(a, b Peer) bool {
	return a.Subnet == b.Subnet && a.PublicIP == b.PublicIP && bytes.Equal(a.VtepMAC, b.VtepMAC)
}

// delta returns the plan that turns the book's entries into those of peers,
// and commit, which records them once written. ok is false when peers
// differ from the book in more than maxDelta peers, or in a way only a full
// computation decides (a duplicate, a collision, a malformed peer). It
// walks peers once with a map lookup each; nothing else is proportional to
// the peers that did not change.
func (b *book) delta(peers []Peer) (p plan, commit func(created map[netip.Addr]uint32) Stats, ok bool) {
	b.gen++
	var changed, removed []Peer
	matched := 0
	for _, np := range peers {
		e, found := b.in[np.Subnet]
		switch {
		case !found:
			changed = append(changed, np)
		case e.gen == b.gen:
			return plan{}, nil, false // listed twice
		default:
			e.gen = b.gen
			matched++
			if !samePeer(e.p, np) {
				changed = append(changed, np)
			}
		}
		if len(changed) > maxDelta {
			return plan{}, nil, false
		}
	}
	if matched < len(b.in) {
		for _, e := range b.in {
			if e.gen != b.gen {
				removed = append(removed, e.p)
			}
		}
	}
	if len(changed)+len(removed) > maxDelta {
		return plan{}, nil, false
	}
	old, oldMACs, ok := b.leaving(changed, removed)
	if !ok {
		return plan{}, nil, false
	}
	next := newTables(len(changed))
	nextMACs := make(map[[6]byte]netip.Prefix, len(changed))
	nextStarts := make(map[netip.Addr]bool, len(changed))
	for _, np := range changed {
		if !b.fits(np, old) || nextStarts[np.Subnet.Masked().Addr()] || b.t.check(np) != nil || next.add(b.t, np, nextMACs) != nil {
			return plan{}, nil, false
		}
		nextStarts[np.Subnet.Masked().Addr()] = true
	}
	commit = func(created map[netip.Addr]uint32) Stats {
		next.adopt(created)
		b.replace(old, oldMACs, next, nextMACs)
		for _, r := range removed {
			delete(b.in, r.Subnet)
		}
		for _, np := range changed {
			b.in[np.Subnet] = &booked{p: np, gen: b.gen}
		}
		return Stats{Peers: len(b.want.routes), Direct: b.direct}
	}
	p = diff(next, old)
	return p, commit, true
}

// leaving is the entries of the booked peers that change or go, their
// routes and nexthops as the book holds them (with the nexthops' ids).
func (b *book) leaving(changed, removed []Peer) (tables, map[[6]byte]netip.Prefix, bool) {
	old := newTables(len(changed) + len(removed))
	macs := make(map[[6]byte]netip.Prefix, len(changed)+len(removed))
	for _, list := range [][]Peer{removed, changed} {
		for _, np := range list {
			e, found := b.in[np.Subnet]
			if found && old.add(b.t, e.p, macs) != nil {
				return old, macs, false // accepted when booked; cannot happen
			}
		}
	}
	for dst := range old.routes {
		r := b.want.routes[dst]
		old.routes[dst] = r
		if r.ownNH && r.nh != 0 {
			old.nhs[r.gw] = r.nh
		}
	}
	return old, macs, true
}

// fits reports whether np collides with none of the booked peers that stay
// (those whose entries are not in old).
func (b *book) fits(np Peer, old tables) bool {
	if !np.Subnet.IsValid() {
		return false
	}
	sn := np.Subnet.Masked()
	if b.starts[sn.Addr()] && !startsAt(old, sn.Addr()) {
		return false // the subnet, or one starting at its address, stays
	}
	if len(np.VtepMAC) == 6 {
		if owner, taken := b.macs[[6]byte(np.VtepMAC)]; taken {
			if _, leaving := old.routes[owner]; !leaving {
				return false
			}
		}
	}
	return true
}

// startsAt reports whether one of t's routes is a subnet starting at a.
func startsAt(t tables, a netip.Addr) bool {
	for dst := range t.routes {
		if dst.Addr() == a {
			return true
		}
	}
	return false
}

// replace swaps old's entries in the book for next's.
func (b *book) replace(old tables, oldMACs map[[6]byte]netip.Prefix, next tables, nextMACs map[[6]byte]netip.Prefix) {
	for dst, r := range old.routes {
		delete(b.want.routes, dst)
		delete(b.starts, dst.Addr())
		if r.link != b.t.dev {
			b.direct--
		}
	}
	for gw := range old.nhs {
		delete(b.want.nhs, gw)
	}
	for ip := range old.neighs {
		delete(b.want.neighs, ip)
	}
	for f := range old.fdb {
		delete(b.want.fdb, f)
	}
	for mac := range oldMACs {
		delete(b.macs, mac)
	}
	for dst, r := range next.routes {
		b.want.routes[dst] = r
		b.starts[dst.Addr()] = true
		if r.link != b.t.dev {
			b.direct++
		}
	}
	for gw, id := range next.nhs {
		b.want.nhs[gw] = id
	}
	for ip, n := range next.neighs {
		b.want.neighs[ip] = n
	}
	for f := range next.fdb {
		b.want.fdb[f] = true
	}
	for mac, sn := range nextMACs {
		b.macs[mac] = sn
	}
}
