package subnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// maxCandidates bounds the free subnets gathered per attempt, as flanneld does.
const maxCandidates = 100

// maxRounds bounds how often Acquire lists again after losing races.
const maxRounds = 16

// Manager holds one node's lease in a Registry.
type Manager struct {
	Registry Registry
	Config   Config // validated
	// Node is what this node writes in its lease; NodeID must be set and stable.
	Node Attrs
	// Instance tells this run apart from another machine's under the same
	// NodeID; only one run at a time holds a NodeID (see Acquire).
	Instance Instance
	// IdentityHint ends the error that refuses a node whose NodeID another
	// run holds: how to give it one of its own.
	IdentityHint string
	// Previous is the subnet of the last run (from subnet.env), then of the
	// last Acquire, tried before a random free one.
	Previous Subnets
	// RenewMargin: the store lease is renewed when less than this is left.
	RenewMargin time.Duration
	// Resync: Watch lists every lease at least this often (DefaultResync when zero).
	Resync time.Duration
	Log    *slog.Logger
	Rand   *rand.Rand // nil: the global source
	Now    func() time.Time

	holds bool // this run holds its NodeID's presence record
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Manager) intn(n int) int {
	if m.Rand != nil {
		return m.Rand.IntN(n)
	}
	return rand.IntN(n)
}

// Acquire takes this node's lease: the one it already holds (found by NodeID,
// or by public address for a reservation or a lease flanneld left on this
// host), else the previous subnet if free, else a random free subnet. Every
// write is a compare-and-swap; a lost race retries with another candidate.
//
// It first claims the NodeID's presence record (claim): while another live
// run holds it, it fails with IdentityInUseError having read nothing else
// and written nothing, so two machines under one NodeID never hold or
// renew one lease (nor the store lease, whose ID may derive from the
// NodeID). Acquire, Check and Release run on one goroutine.
func (m *Manager) Acquire(ctx context.Context) (Lease, error) {
	if err := m.claim(ctx); err != nil {
		return Lease{}, err
	}
	value, err := json.Marshal(m.Node)
	if err != nil {
		return Lease{}, fmt.Errorf("encoding the lease value: %w", err)
	}
	for round := 0; round < maxRounds; round++ {
		entries, _, err := m.Registry.List(ctx)
		if err != nil {
			return Lease{}, fmt.Errorf("listing leases: %w", err)
		}
		l, err := m.tryAcquire(ctx, entries, value)
		if errors.Is(err, ErrConflict) {
			m.Log.Info("lost a race for a subnet; trying another", "error", err)
			continue
		}
		if err == nil {
			m.Previous = l.Subnets // a later loss tries this subnet first
		}
		return l, err
	}
	return Lease{}, fmt.Errorf("gave up after %d rounds of lost races: %w", maxRounds, ErrConflict)
}

// tryAcquire makes one attempt over one listing; ErrConflict means list again.
func (m *Manager) tryAcquire(ctx context.Context, entries []Entry, value []byte) (Lease, error) {
	if own, ok := m.findOwn(entries); ok {
		if own.Lease != 0 {
			// Keep the store lease of the previous run rather than orphan it.
			if err := m.Registry.Adopt(ctx, own.Lease); err != nil && !errors.Is(err, ErrLeaseGone) {
				return Lease{}, fmt.Errorf("adopting store lease %x: %w", own.Lease, err)
			}
		}
		m.Log.Info("reusing this node's lease", "subnet", own.Subnets, "reservation", own.Lease == 0)
		return m.put(ctx, own.Subnets, value, own.Rev, own.Lease != 0)
	}
	if m.Previous != (Subnets{}) && m.fits(m.Previous) && !taken(entries, m.Previous) {
		l, err := m.put(ctx, m.Previous, value, 0, true)
		if err == nil {
			m.Log.Info("took the previous run's subnet", "subnet", l.Subnets)
		}
		return l, err
	}
	cands := m.candidates(entries)
	if len(cands) == 0 {
		return Lease{}, fmt.Errorf("%w (%d leases held); widen Network, or delete leases of nodes that are gone", ErrNoSubnets, len(entries))
	}
	for len(cands) > 0 {
		i := m.intn(len(cands))
		l, err := m.put(ctx, cands[i], value, 0, true)
		if !errors.Is(err, ErrConflict) {
			if err == nil {
				m.Log.Info("took a free subnet", "subnet", l.Subnets)
			}
			return l, err
		}
		cands = append(cands[:i], cands[i+1:]...)
	}
	return Lease{}, fmt.Errorf("every candidate was taken meanwhile: %w", ErrConflict)
}

// put writes the value with a compare-and-swap and, for a leased key, renews
// the store lease to learn its expiry.
func (m *Manager) put(ctx context.Context, s Subnets, value []byte, prevRev int64, leased bool) (Lease, error) {
	e, err := m.Registry.Put(ctx, s, value, prevRev, leased)
	if err != nil {
		return Lease{}, fmt.Errorf("writing lease %s: %w", s.Key(), err)
	}
	l := Lease{Subnets: s, Attrs: m.Node, Rev: e.Rev, Reserved: !leased}
	if leased {
		ttl, err := m.Registry.KeepAlive(ctx)
		if err != nil {
			return Lease{}, fmt.Errorf("renewing the store lease of %s: %w", s.Key(), err)
		}
		l.Expiry = m.now().Add(ttl)
	}
	return l, nil
}

// findOwn returns the entry this node holds: its NodeID, or no NodeID and its
// public address (a reservation, or a lease flanneld wrote on this host). An
// entry of another NodeID is never ours, whatever its address.
func (m *Manager) findOwn(entries []Entry) (Entry, bool) {
	var byAddr *Entry
	for i, e := range entries {
		var a Attrs
		if json.Unmarshal(e.Value, &a) != nil || !m.fits(e.Subnets) {
			continue
		}
		if a.NodeID == m.Node.NodeID {
			return e, true
		}
		if a.NodeID == "" && byAddr == nil && m.sameAddress(a) {
			byAddr = &entries[i]
		}
	}
	if byAddr != nil {
		return *byAddr, true
	}
	return Entry{}, false
}

func (m *Manager) sameAddress(a Attrs) bool {
	return (m.Node.PublicIP.IsValid() && !m.Node.PublicIP.IsUnspecified() && a.PublicIP == m.Node.PublicIP) ||
		(m.Node.PublicIPv6.IsValid() && a.PublicIPv6 == m.Node.PublicIPv6)
}

// fits reports whether s is a lease of this network: the enabled families
// only, each of the configured length and inside SubnetMin..SubnetMax.
func (m *Manager) fits(s Subnets) bool {
	c := m.Config
	if c.EnableIPv4 != s.V4.IsValid() || c.EnableIPv6 != s.V6.IsValid() {
		return false
	}
	if c.EnableIPv4 && (s.V4.Bits() != c.SubnetLen || s.V4.Addr().Less(c.SubnetMin) || c.SubnetMax.Less(s.V4.Addr())) {
		return false
	}
	if c.EnableIPv6 && (s.V6.Bits() != c.IPv6SubnetLen || s.V6.Addr().Less(c.IPv6SubnetMin) || c.IPv6SubnetMax.Less(s.V6.Addr())) {
		return false
	}
	return true
}

func taken(entries []Entry, s Subnets) bool {
	for _, e := range entries {
		if e.Subnets.Overlaps(s) {
			return true
		}
	}
	return false
}
