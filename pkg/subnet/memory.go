package subnet

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MemStore is an in-memory store with etcd's semantics (revisions, leases,
// compaction) whose clients are Registries, for tests of the Manager and of
// its users.
type MemStore struct {
	mu        sync.Mutex
	config    []byte
	keys      map[Subnets]Entry
	leases    map[int64]bool // alive store leases
	rev       int64
	compacted int64   // watches from revisions at or below this fail
	history   []Event // every change, for watches
	changed   chan struct{}
	nextLease int64
	TTL       time.Duration
	presence  map[string]memPresence // by node; gone when expired or released
}

// memPresence is a presence record and the owner whose lease it hangs on.
type memPresence struct {
	Record
	owner string
}

// NewMemStore returns an empty store with store leases of the given TTL.
func NewMemStore(ttl time.Duration) *MemStore {
	return &MemStore{keys: map[Subnets]Entry{}, leases: map[int64]bool{}, changed: make(chan struct{}), TTL: ttl, rev: 1,
		presence: map[string]memPresence{}}
}

// Client returns a Registry over the store, as one node's etcd client
// would be: it shares the keys with every other client and holds its own
// store lease.
func (m *MemStore) Client() Registry { return &memClient{store: m} }

// Expire ends a store lease as etcd does when its TTL runs out: the keys
// attached to it are deleted.
func (m *MemStore) Expire(id int64) {
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
func (m *MemStore) ExpirePresence(node string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.presence, node)
}

// Compact forgets the history up to the current revision.
func (m *MemStore) Compact() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.compacted = m.rev
	m.history = nil
	m.notify()
}

// remove deletes a key and records the event; m.mu is held.
func (m *MemStore) remove(s Subnets) {
	m.rev++
	delete(m.keys, s)
	m.history = append(m.history, Event{Entry: Entry{Subnets: s, Rev: m.rev}, Deleted: true})
	m.notify()
}

func (m *MemStore) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// memClient is one node's view of a MemStore.
type memClient struct {
	store *MemStore
	lease int64 // the store lease this client holds; guarded by store.mu
	// The presence record this client claimed last, and its owner.
	presenceNode, presenceOwner string
}

func (c *memClient) Config(ctx context.Context) ([]byte, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.config == nil {
		return nil, fmt.Errorf("network config: %w", ErrNotFound)
	}
	return append([]byte(nil), m.config...), ctx.Err()
}

func (c *memClient) CreateConfig(ctx context.Context, data []byte) error {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.config != nil {
		return fmt.Errorf("network config: %w", ErrConflict)
	}
	m.config = append([]byte(nil), data...)
	m.rev++
	return ctx.Err()
}

func (c *memClient) List(ctx context.Context) ([]Entry, int64, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Entry, 0, len(m.keys))
	for _, e := range m.keys {
		out = append(out, e)
	}
	return out, m.rev, ctx.Err()
}

func (c *memClient) Get(ctx context.Context, s Subnets) (Entry, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.keys[s]
	if !ok {
		return Entry{}, fmt.Errorf("lease %s: %w", s.Key(), ErrNotFound)
	}
	return e, ctx.Err()
}

func (c *memClient) Put(ctx context.Context, s Subnets, value []byte, prevRev int64, leased bool) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keys[s].Rev != prevRev {
		return Entry{}, fmt.Errorf("lease %s: %w", s.Key(), ErrConflict)
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
	e := Entry{Subnets: s, Value: append([]byte(nil), value...), Rev: m.rev, Lease: lease}
	m.keys[s] = e
	m.history = append(m.history, Event{Entry: e})
	m.notify()
	return e, nil
}

func (c *memClient) Delete(ctx context.Context, s Subnets, prevRev int64) error {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.keys[s]
	if !ok || e.Rev != prevRev {
		return fmt.Errorf("lease %s: %w", s.Key(), ErrConflict)
	}
	m.remove(s)
	return ctx.Err()
}

func (c *memClient) Adopt(ctx context.Context, id int64) error {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leases[id] {
		return fmt.Errorf("store lease %x: %w", id, ErrLeaseGone)
	}
	c.lease = id
	return ctx.Err()
}

func (c *memClient) KeepAlive(ctx context.Context) (time.Duration, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leases[c.lease] {
		return 0, fmt.Errorf("store lease %x: %w", c.lease, ErrLeaseGone)
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

func (c *memClient) Presence(ctx context.Context, node string) (Record, error) {
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.presence[node]
	if !ok {
		return Record{}, fmt.Errorf("presence of %s: %w", node, ErrNotFound)
	}
	return p.Record, ctx.Err()
}

func (c *memClient) ClaimPresence(ctx context.Context, node, owner string, value []byte, prevRev int64) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	m := c.store
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.presence[node].Rev != prevRev {
		return Record{}, fmt.Errorf("presence of %s: %w", node, ErrConflict)
	}
	m.rev++
	p := memPresence{Record: Record{Value: append([]byte(nil), value...), Rev: m.rev}, owner: owner}
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

func (c *memClient) Watch(ctx context.Context, rev int64) <-chan Event {
	ch := make(chan Event)
	go c.store.serveWatch(ctx, rev, ch)
	return ch
}

// serveWatch sends every recorded change from rev on, then waits for more.
func (m *MemStore) serveWatch(ctx context.Context, rev int64, ch chan<- Event) {
	defer close(ch)
	for {
		m.mu.Lock()
		if rev <= m.compacted {
			m.mu.Unlock()
			select {
			case ch <- Event{Err: fmt.Errorf("revision %d: %w", rev, ErrCompacted)}:
			case <-ctx.Done():
			}
			return
		}
		var batch []Event
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
