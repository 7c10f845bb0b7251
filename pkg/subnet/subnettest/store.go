// Package subnettest holds a test double of pkg/subnet's Registry, for the
// tests of the Manager and of its users (subnetd). Only tests import it:
// production code must not.
package subnettest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
)

// Store is an in-memory store with etcd's semantics (revisions, leases,
// compaction) whose clients are Registries.
type Store struct {
	mu        sync.Mutex
	config    []byte
	keys      map[subnet.Subnets]subnet.Entry
	leases    map[int64]bool // alive store leases
	rev       int64
	compacted int64          // watches from revisions at or below this fail
	history   []subnet.Event // every change, for watches
	changed   chan struct{}
	nextLease int64
	TTL       time.Duration
	presence  map[string]memPresence // by node; gone when expired or released
}

// memPresence is a presence record and the owner whose lease it hangs on.
type memPresence struct {
	subnet.Record
	owner string
}

// NewStore returns an empty store with store leases of the given TTL.
func NewStore(ttl time.Duration) *Store {
	return &Store{keys: map[subnet.Subnets]subnet.Entry{}, leases: map[int64]bool{}, changed: make(chan struct{}), TTL: ttl, rev: 1,
		presence: map[string]memPresence{}}
}

// Client returns a subnet.Registry over the store, as one node's etcd client
// would be: it shares the keys with every other client and holds its own
// store lease.
func (m *Store) Client() subnet.Registry { return &memClient{store: m} }

// Expire ends a store lease as etcd does when its TTL runs out: the keys
// attached to it are deleted.
func (m *Store) Expire(id int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.leases, id)
	for s, e := range m.keys {
		if e.Lease == id {
			m.remove(s)
		}
	}
}

// ExpirePresence ends node's presence record as PresenceTTL passing without
// a renewal does (its run stopped, or lost the store).
func (m *Store) ExpirePresence(node string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.presence, node)
}

// AliveLeases is the number of store leases neither expired nor revoked.
func (m *Store) AliveLeases() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.leases)
}

// KeyCount is the number of subnet keys in the store.
func (m *Store) KeyCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}

// Compact forgets the history up to the current revision.
func (m *Store) Compact() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.compacted = m.rev
	m.history = nil
	m.notify()
}

// remove deletes a key and records the event; m.mu is held.
func (m *Store) remove(s subnet.Subnets) {
	m.rev++
	delete(m.keys, s)
	m.history = append(m.history, subnet.Event{Entry: subnet.Entry{Subnets: s, Rev: m.rev}, Deleted: true})
	m.notify()
}

func (m *Store) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// memClient is one node's view of a Store.
type memClient struct {
	store *Store
	lease int64 // the store lease this client holds; guarded by store.mu
	// The presence record this client claimed last, and its owner.
	presenceNode, presenceOwner string
}

func (c *memClient) Config(ctx context.Context) ([]byte, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.config == nil {
		return nil, fmt.Errorf("network config: %w", subnet.ErrNotFound)
	}
	return append([]byte(nil), m.config...), ctx.Err()
}

func (c *memClient) CreateConfig(ctx context.Context, data []byte) error {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.config != nil {
		return fmt.Errorf("network config: %w", subnet.ErrConflict)
	}
	m.config = append([]byte(nil), data...)
	m.rev++
	return ctx.Err()
}

func (c *memClient) List(ctx context.Context) ([]subnet.Entry, int64, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]subnet.Entry, 0, len(m.keys))
	for _, e := range m.keys {
		out = append(out, e)
	}
	return out, m.rev, ctx.Err()
}

func (c *memClient) Get(ctx context.Context, s subnet.Subnets) (subnet.Entry, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.keys[s]
	if !ok {
		return subnet.Entry{}, fmt.Errorf("lease %s: %w", s.Key(), subnet.ErrNotFound)
	}
	return e, ctx.Err()
}

func (c *memClient) Put(ctx context.Context, s subnet.Subnets, value []byte, prevRev int64, leased bool) (subnet.Entry, error) {
	if err := ctx.Err(); err != nil {
		return subnet.Entry{}, err
	}
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys[s].Rev != prevRev {
		return subnet.Entry{}, fmt.Errorf("lease %s: %w", s.Key(), subnet.ErrConflict)
	}
	var lease int64
	if leased {
		held := &c.lease
		if !m.leases[*held] {
			m.nextLease++
			*held = m.nextLease
			m.leases[*held] = true
		}
		lease = *held
	}
	m.rev++
	e := subnet.Entry{Subnets: s, Value: append([]byte(nil), value...), Rev: m.rev, Lease: lease}
	m.keys[s] = e
	m.history = append(m.history, subnet.Event{Entry: e})
	m.notify()
	return e, nil
}

func (c *memClient) Delete(ctx context.Context, s subnet.Subnets, prevRev int64) error {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.keys[s]
	if !ok || e.Rev != prevRev {
		return fmt.Errorf("lease %s: %w", s.Key(), subnet.ErrConflict)
	}
	m.remove(s)
	return ctx.Err()
}

func (c *memClient) Adopt(ctx context.Context, id int64) error {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leases[id] {
		return fmt.Errorf("store lease %x: %w", id, subnet.ErrLeaseGone)
	}
	c.lease = id
	return ctx.Err()
}

func (c *memClient) KeepAlive(ctx context.Context) (time.Duration, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leases[c.lease] {
		return 0, fmt.Errorf("store lease %x: %w", c.lease, subnet.ErrLeaseGone)
	}
	return m.TTL, ctx.Err()
}

func (c *memClient) Revoke(ctx context.Context) error {
	m := c.store
	m.mu.Lock()
	id := c.lease
	m.mu.Unlock()
	if id != 0 {
		m.Expire(id)
	}
	return ctx.Err()
}

func (c *memClient) Presence(ctx context.Context, node string) (subnet.Record, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.presence[node]
	if !ok {
		return subnet.Record{}, fmt.Errorf("presence of %s: %w", node, subnet.ErrNotFound)
	}
	return p.Record, ctx.Err()
}

func (c *memClient) ClaimPresence(ctx context.Context, node, owner string, value []byte, prevRev int64) (subnet.Record, error) {
	if err := ctx.Err(); err != nil {
		return subnet.Record{}, err
	}
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.presence[node].Rev != prevRev {
		return subnet.Record{}, fmt.Errorf("presence of %s: %w", node, subnet.ErrConflict)
	}
	m.rev++
	p := memPresence{Record: subnet.Record{Value: append([]byte(nil), value...), Rev: m.rev}, owner: owner}
	m.presence[node] = p
	c.presenceNode, c.presenceOwner = node, owner
	return p.Record, nil
}

func (c *memClient) ReleasePresence(ctx context.Context) error {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.presence[c.presenceNode]; ok && p.owner == c.presenceOwner {
		delete(m.presence, c.presenceNode)
	}
	return ctx.Err()
}

func (c *memClient) Watch(ctx context.Context, rev int64) <-chan subnet.Event {
	ch := make(chan subnet.Event)
	go c.store.serveWatch(ctx, rev, ch)
	return ch
}

// serveWatch sends every recorded change from rev on, then waits for more.
func (m *Store) serveWatch(ctx context.Context, rev int64, ch chan<- subnet.Event) {
	defer close(ch)
	for {
		m.mu.Lock()
		if rev <= m.compacted {
			m.mu.Unlock()
			select {
			case ch <- subnet.Event{Err: fmt.Errorf("revision %d: %w", rev, subnet.ErrCompacted)}:
			case <-ctx.Done():
			}
			return
		}
		var batch []subnet.Event
		for _, e := range m.history {
			if e.Entry.Rev >= rev {
				batch = append(batch, e)
			}
		}
		changed := m.changed
		m.mu.Unlock()
		for _, e := range batch {
			select {
			case ch <- e:
				rev = e.Entry.Rev + 1
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}
