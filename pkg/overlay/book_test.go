package overlay

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
)

// TestBookDeltaMatchesFullComputation: over random lease events (peers
// added, removed, moved, re-keyed, duplicated, malformed), whenever the
// book takes an event on, its plan and its entries afterwards are exactly
// those of computing every peer again and diffing.
func TestBookDeltaMatchesFullComputation(t *testing.T) {
	for _, c := range []struct {
		direct, nexthops bool
		seed             uint64
	}{{false, false, 1}, {false, true, 2}, {false, true, 3}, {true, false, 1}, {true, false, 2}, {true, true, 3}, {true, true, 4}} {
		direct := c.direct
		t.Run(fmt.Sprintf("direct routing %v nexthops %v seed %d", direct, c.nexthops, c.seed), func(t *testing.T) {
			tg := target{own: netip.MustParsePrefix("10.0.255.0/24"), ownMAC: [6]byte{2, 0, 0, 0, 0, 1},
				self: []netip.Addr{netip.MustParseAddr("192.168.0.1")}, dev: 7, underlay: 2, nexthops: c.nexthops}
			var lastID uint32
			// kernel gives the nexthops a plan creates ids, as the kernel would.
			kernel := func(p plan) map[netip.Addr]uint32 {
				ids := map[netip.Addr]uint32{}
				for _, gw := range p.addNH {
					lastID++
					ids[gw] = lastID
				}
				return ids
			}
			if direct {
				tg.direct = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")}
			}
			rng := rand.New(rand.NewPCG(c.seed, 2))
			var peers []Peer
			for range 20 {
				peers = append(peers, randomPeer(rng))
			}
			model, skipped := wanted(tg, peers, quiet)
			model.adopt(kernel(diff(model, newTables(0))))
			b := newBook(tg, peers, model, skipped)
			deltas, fulls, nhWrites := 0, 0, 0
			good := peers // the last peers without a skipped one
			for step := range 3000 {
				next := mutate(rng, peers)
				if b == nil && rng.IntN(2) == 0 {
					next = good // the bad lease is deleted again
				}
				full, skipped := wanted(tg, next, quiet)
				want := diff(full, model)
				nhWrites += len(want.addNH) + len(want.delNH)
				if b != nil {
					if p, commit, ok := b.delta(next); ok {
						deltas++
						if !samePlan(p, want) {
							t.Fatalf("step %d: delta plan %+v, full plan %+v", step, p, want)
						}
						created := kernel(p)
						s := commit(created)
						full.adopt(created)
						if !sameTables(b.want, full) || s.Peers != len(full.routes) || s.Direct != count(tg, full, plan{}, 0).Direct {
							t.Fatalf("step %d: book after commit differs from the full computation (stats %+v)", step, s)
						}
						model, peers, good = b.want, next, next
						continue
					}
				}
				fulls++
				full.adopt(kernel(want))
				model, peers, b = full, next, newBook(tg, next, full, skipped)
				if skipped == 0 {
					good = next
				}
			}
			if deltas < 1000 || fulls < 100 {
				t.Fatalf("%d events by delta and %d by full computation: the test no longer covers both", deltas, fulls)
			}
			if (nhWrites > 0) != c.nexthops {
				t.Fatalf("%d nexthop writes with nexthops %v", nhWrites, c.nexthops)
			}
		})
	}
}

// randomPeer draws a peer; collisions with other peers come from mutate.
func randomPeer(rng *rand.Rand) Peer {
	bits := 24
	if rng.IntN(20) == 0 {
		bits = 25 // starts where a /24 does
	}
	return Peer{
		// Now and then this node's own subnet (10.0.255.0/24) or address (192.168.0.1).
		Subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(rng.IntN(16)), byte(rng.IntN(256)), 0}), bits),
		PublicIP: netip.AddrFrom4([4]byte{192, 168, byte(rng.IntN(2)), byte(1 + rng.IntN(200))}),
		VtepMAC:  net.HardwareAddr{0x0e, 0, 0, 0, byte(rng.IntN(256)), byte(rng.IntN(256))},
	}
}

// mutate is one lease event, now and then several at once: a peer added,
// removed, moved to another address or MAC, one listed with another's
// subnet or MAC, one malformed.
func mutate(rng *rand.Rand, peers []Peer) []Peer {
	next := append([]Peer(nil), peers...)
	for range 1 + rng.IntN(2)*rng.IntN(4) {
		i, j := rng.IntN(max(len(next), 1)), rng.IntN(max(len(next), 1))
		switch op := rng.IntN(16); {
		case len(next) == 0 || op < 5:
			next = append(next, randomPeer(rng))
		case op < 10:
			next = append(next[:i], next[i+1:]...)
		case op < 12:
			next[i].PublicIP = randomPeer(rng).PublicIP
		case op < 14:
			next[i].VtepMAC = randomPeer(rng).VtepMAC
		case op == 14:
			dup := randomPeer(rng)
			if rng.IntN(2) == 0 {
				dup.Subnet = next[j].Subnet
			} else {
				dup.VtepMAC = next[j].VtepMAC
			}
			next = append(next, dup)
		default:
			next[i].PublicIP = netip.IPv4Unspecified()
		}
	}
	rng.Shuffle(len(next), func(a, b int) { next[a], next[b] = next[b], next[a] })
	return next
}

func sameTables(a, b tables) bool {
	return maps.Equal(a.routes, b.routes) && maps.Equal(a.neighs, b.neighs) && maps.Equal(a.fdb, b.fdb) && maps.Equal(a.nhs, b.nhs)
}

func samePlan(a, b plan) bool {
	return sameSet(a.addFDB, b.addFDB) && sameSet(a.addNeigh, b.addNeigh) && sameSet(a.addNH, b.addNH) && sameSet(a.addRoute, b.addRoute) &&
		sameSet(a.delRoute, b.delRoute) && sameSet(a.delNH, b.delNH) && sameSet(a.delNeigh, b.delNeigh) && sameSet(a.delFDB, b.delFDB)
}

func sameSet[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	in := map[T]int{}
	for _, x := range a {
		in[x]++
	}
	for _, x := range b {
		in[x]--
	}
	for _, n := range in {
		if n != 0 {
			return false
		}
	}
	return true
}
