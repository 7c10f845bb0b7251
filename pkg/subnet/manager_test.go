package subnet_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/subnettest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func mustConfig(t *testing.T, s string) subnet.Config {
	t.Helper()
	c, err := subnet.ParseConfig([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newManager(t *testing.T, reg subnet.Registry, cfg subnet.Config, id, ip string) *subnet.Manager {
	t.Helper()
	return &subnet.Manager{Registry: reg, Config: cfg, Node: subnet.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", NodeID: id},
		RenewMargin: time.Minute, Log: quiet, Rand: rand.New(rand.NewPCG(1, 2))}
}

func put(t *testing.T, reg subnet.Registry, key string, a subnet.Attrs, leased bool) subnet.Entry {
	t.Helper()
	s, err := subnet.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := json.Marshal(a)
	e, err := reg.Put(context.Background(), s, v, 0, leased)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const net22 = `{"Network":"10.0.0.0/22"}` // three subnets: 10.0.1.0, 10.0.2.0, 10.0.3.0

func TestAcquire(t *testing.T) {
	ctx := context.Background()
	cfg := mustConfig(t, net22)
	other := subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.0.9"), NodeID: "other"}
	tests := []struct {
		name     string
		setup    func(subnet.Registry) // keys present before
		previous string
		want     string // key acquired; "" when none is left
		reserved bool
	}{
		{"free subnet", func(subnet.Registry) {}, "", "", false},
		{"previous subnet", func(subnet.Registry) {}, "10.0.2.0-24", "10.0.2.0-24", false},
		{"previous taken", func(r subnet.Registry) { put(t, r, "10.0.2.0-24", other, true) }, "10.0.2.0-24", "", false},
		{"previous outside network", func(subnet.Registry) {}, "10.9.2.0-24", "", false},
		{"own by node id", func(r subnet.Registry) {
			put(t, r, "10.0.3.0-24", subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.0.50"), NodeID: "me"}, true)
		}, "10.0.2.0-24", "10.0.3.0-24", false},
		{"reservation by public ip stays one", func(r subnet.Registry) {
			put(t, r, "10.0.1.0-24", subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.0.1")}, false)
		}, "", "10.0.1.0-24", true},
		{"flanneld lease of this host", func(r subnet.Registry) {
			put(t, r, "10.0.3.0-24", subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.0.1"), BackendType: "vxlan"}, true)
		}, "", "10.0.3.0-24", false},
		{"same address, other node id is not ours", func(r subnet.Registry) {
			put(t, r, "10.0.3.0-24", subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.0.1"), NodeID: "returning"}, true)
			put(t, r, "10.0.1.0-24", other, true)
		}, "", "10.0.2.0-24", false},
		{"other's reservation is skipped", func(r subnet.Registry) {
			put(t, r, "10.0.1.0-24", subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.0.7")}, false)
			put(t, r, "10.0.2.0-24", other, true)
		}, "", "10.0.3.0-24", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := subnettest.NewStore(time.Hour)
			tt.setup(store.Client())
			m := newManager(t, store.Client(), cfg, "me", "192.168.0.1")
			if tt.previous != "" {
				m.Previous, _ = subnet.ParseKey(tt.previous)
			}
			l, err := m.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if (tt.want != "" && l.Subnets.Key() != tt.want) || l.Reserved != tt.reserved || !m.Fits(l.Subnets) {
				t.Fatalf("acquired %s (reserved %v), want %q (reserved %v)", l.Subnets.Key(), l.Reserved, tt.want, tt.reserved)
			}
			e, err := m.Registry.Get(ctx, l.Subnets)
			if err != nil || (e.Lease == 0) != tt.reserved || !m.Owns(l, e) {
				t.Fatalf("stored %+v, %v", e, err)
			}
			entries, _, _ := m.Registry.List(ctx)
			for _, o := range entries {
				if o.Subnets != l.Subnets && o.Subnets.Overlaps(l.Subnets) {
					t.Fatalf("%s overlaps %s", l.Subnets.Key(), o.Subnets.Key())
				}
			}
		})
	}
}

func TestAcquireFamilies(t *testing.T) {
	tests := []struct{ name, cfg, want string }{
		{"ipv6 only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/62"}`, "0.0.0.0-0&fd00:0:0:"},
		{"dual stack", `{"Network":"10.0.0.0/22","EnableIPv6":true,"IPv6Network":"fd00::/62"}`, "10.0.1.0-24&fd00:0:0:1::-64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := subnettest.NewStore(time.Hour)
			m := newManager(t, store.Client(), mustConfig(t, tt.cfg), "me", "192.168.0.1")
			m.Rand = rand.New(rand.NewPCG(0, 0))
			m.Config.SubnetMax = m.Config.SubnetMin // one IPv4 candidate: the pairing is then known
			l, err := m.Acquire(context.Background())
			if err != nil || len(l.Subnets.Key()) < len(tt.want) || l.Subnets.Key()[:len(tt.want)] != tt.want {
				t.Fatalf("acquired %q, %v; want prefix %q", l.Subnets.Key(), err, tt.want)
			}
			// A restart finds the same lease by node id, in either family.
			again, err := newManager(t, store.Client(), m.Config, "me", "192.168.0.99").Acquire(context.Background())
			if err != nil || again.Subnets != l.Subnets {
				t.Fatalf("after restart %v, %v; want %v", again.Subnets, err, l.Subnets)
			}
		})
	}
}

// TestRestartKeepsStoreLease checks that a restarted node adopts the store
// lease of its previous run instead of leaving it orphaned.
func TestRestartKeepsStoreLease(t *testing.T) {
	ctx := context.Background()
	store := subnettest.NewStore(time.Hour)
	cfg := mustConfig(t, net22)
	first, err := newManager(t, store.Client(), cfg, "me", "192.168.0.1").Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e1, _ := store.Client().Get(ctx, first.Subnets)
	second, err := newManager(t, store.Client(), cfg, "me", "192.168.0.1").Acquire(ctx)
	if err != nil || second.Subnets != first.Subnets {
		t.Fatalf("restart: %v, %v", second.Subnets, err)
	}
	e2, _ := store.Client().Get(ctx, second.Subnets)
	if e2.Lease != e1.Lease || store.AliveLeases() != 1 {
		t.Fatalf("store lease %x then %x; %d alive, want the first one adopted and no other", e1.Lease, e2.Lease, store.AliveLeases())
	}
}

// TestRaceOneFreeSubnet: two nodes, one free subnet, at once: exactly one wins.
func TestRaceOneFreeSubnet(t *testing.T) {
	for i := range 50 {
		store := subnettest.NewStore(time.Hour)
		cfg := mustConfig(t, net22)
		seed := subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.0.9"), NodeID: "x"}
		put(t, store.Client(), "10.0.1.0-24", seed, true)
		put(t, store.Client(), "10.0.2.0-24", seed, true)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for n := range 2 {
			m := newManager(t, store.Client(), cfg, string(rune('a'+n)), "192.168.0.1")
			m.Rand = rand.New(rand.NewPCG(uint64(i), uint64(n)))
			wg.Go(func() { _, errs[n] = m.Acquire(context.Background()) })
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, subnet.ErrNoSubnets):
				t.Fatalf("loser's error %v, want ErrNoSubnets", err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d winners (%v)", i, won, errs)
		}
	}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	cfg := mustConfig(t, net22)
	now := time.Unix(1000, 0)
	tests := []struct {
		name    string
		act     func(*subnettest.Store, subnet.Lease)
		advance time.Duration
		wantErr error
		renewed bool
	}{
		{"nothing to do", func(*subnettest.Store, subnet.Lease) {}, time.Second, nil, false},
		{"renewal due", func(*subnettest.Store, subnet.Lease) {}, 59*time.Minute + time.Second, nil, true},
		{"store lease expired", func(s *subnettest.Store, l subnet.Lease) {
			e, _ := s.Client().Get(ctx, l.Subnets)
			s.Expire(e.Lease)
		}, time.Second, subnet.ErrLeaseLost, false},
		{"key deleted", func(s *subnettest.Store, l subnet.Lease) {
			e, _ := s.Client().Get(ctx, l.Subnets)
			_ = s.Client().Delete(ctx, l.Subnets, e.Rev)
		}, time.Second, subnet.ErrLeaseLost, false},
		{"taken over", func(s *subnettest.Store, l subnet.Lease) {
			c := s.Client()
			e, _ := c.Get(ctx, l.Subnets)
			v, _ := json.Marshal(subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.0.7"), NodeID: "thief"})
			if _, err := c.Put(ctx, l.Subnets, v, e.Rev, true); err != nil {
				t.Fatal(err)
			}
		}, time.Second, subnet.ErrWrongOwner, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := subnettest.NewStore(time.Hour)
			clock := now
			m := newManager(t, store.Client(), cfg, "me", "192.168.0.1")
			m.Now = func() time.Time { return clock }
			l, err := m.Acquire(ctx)
			if err != nil || !l.Expiry.Equal(now.Add(time.Hour)) {
				t.Fatalf("acquire: %+v, %v", l, err)
			}
			tt.act(store, l)
			clock = clock.Add(tt.advance)
			got, err := m.Check(ctx, l)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Check error %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				// The node acquires again and gets a lease that is its own.
				again, err := m.Acquire(ctx)
				if err != nil || again.Subnets == (subnet.Subnets{}) {
					t.Fatalf("re-acquire: %v", err)
				}
				return
			}
			if renewed := got.Expiry.Equal(clock.Add(time.Hour)); renewed != tt.renewed {
				t.Fatalf("expiry %v (renewed %v), want renewed %v", got.Expiry, renewed, tt.renewed)
			}
		})
	}
}

func TestRelease(t *testing.T) {
	ctx := context.Background()
	store := subnettest.NewStore(time.Hour)
	cfg := mustConfig(t, net22)
	put(t, store.Client(), "10.0.1.0-24", subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.0.2")}, false)
	for _, ip := range []string{"192.168.0.1", "192.168.0.2"} {
		m := newManager(t, store.Client(), cfg, ip, ip)
		l, err := m.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Release(ctx, l); err != nil {
			t.Fatal(err)
		}
		_, err = m.Registry.Get(ctx, l.Subnets)
		if l.Reserved != (err == nil) {
			t.Fatalf("%s after release: %v (reserved %v): a reservation stays, a lease goes", l.Subnets.Key(), err, l.Reserved)
		}
	}
	if store.AliveLeases() != 0 {
		t.Fatalf("%d store leases left after release", store.AliveLeases())
	}
}

// TestWatch follows puts and expiries, also across a compaction of history
// the watch had already read.
func TestWatch(t *testing.T) {
	store := subnettest.NewStore(time.Hour)
	m := newManager(t, store.Client(), mustConfig(t, net22), "me", "192.168.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	views := make(chan int, 100)
	go m.Watch(ctx, func(es []subnet.Entry) { views <- len(es) })
	wait := func(n int) {
		t.Helper()
		for {
			select {
			case got := <-views:
				if got == n {
					return
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no view with %d leases", n)
			}
		}
	}
	wait(0)
	a := put(t, store.Client(), "10.0.1.0-24", subnet.Attrs{NodeID: "a"}, true)
	wait(1)
	store.Compact()
	put(t, store.Client(), "10.0.2.0-24", subnet.Attrs{NodeID: "b"}, true)
	wait(2)
	store.Expire(a.Lease)
	wait(1)
}

// compactedOnce fails the first watch as etcd does when the revision asked
// for was compacted away.
type compactedOnce struct {
	subnet.Registry
	mu           sync.Mutex
	lists, calls int
}

func (c *compactedOnce) List(ctx context.Context) ([]subnet.Entry, int64, error) {
	c.mu.Lock()
	c.lists++
	c.mu.Unlock()
	return c.Registry.List(ctx)
}

func (c *compactedOnce) Watch(ctx context.Context, rev int64) <-chan subnet.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls++; c.calls == 1 {
		ch := make(chan subnet.Event, 1)
		ch <- subnet.Event{Err: subnet.ErrCompacted}
		close(ch)
		return ch
	}
	return c.Registry.Watch(ctx, rev)
}

func TestWatchRelistsAfterCompaction(t *testing.T) {
	store := subnettest.NewStore(time.Hour)
	store.Compact()
	if ev := <-store.Client().Watch(context.Background(), 1); !errors.Is(ev.Err, subnet.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %+v", ev)
	}
	reg := &compactedOnce{Registry: store.Client()}
	m := newManager(t, reg, mustConfig(t, net22), "me", "192.168.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	views := make(chan int, 10)
	go m.Watch(ctx, func(es []subnet.Entry) { views <- len(es) })
	<-views
	put(t, store.Client(), "10.0.1.0-24", subnet.Attrs{NodeID: "a"}, true)
	for got := range views {
		if got == 1 {
			break
		}
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.lists < 2 {
		t.Fatalf("%d listings: the compacted watch was not followed by a new one", reg.lists)
	}
}

// losesDeletes is a store whose watches drop every delete without an error,
// as etcd's can (etcd-io/etcd#18089).
type losesDeletes struct{ subnet.Registry }

func (l losesDeletes) Watch(ctx context.Context, rev int64) <-chan subnet.Event {
	out := make(chan subnet.Event)
	go func() {
		defer close(out)
		for ev := range l.Registry.Watch(ctx, rev) {
			if !ev.Deleted {
				out <- ev
			}
		}
	}()
	return out
}

// TestWatchResyncs: a delete the watch never delivered is found by the
// periodic listing, which says that the watch had missed it.
func TestWatchResyncs(t *testing.T) {
	store := subnettest.NewStore(time.Hour)
	var log testutil.SyncBuffer
	m := newManager(t, losesDeletes{store.Client()}, mustConfig(t, net22), "me", "192.168.0.1")
	m.Resync, m.Log = 100*time.Millisecond, slog.New(slog.NewTextHandler(&log, nil))
	a := put(t, store.Client(), "10.0.1.0-24", subnet.Attrs{NodeID: "a"}, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	views := make(chan int, 100)
	go m.Watch(ctx, func(es []subnet.Entry) { views <- len(es) })
	if n := <-views; n != 1 {
		t.Fatalf("first view: %d leases, want 1", n)
	}
	if err := store.Client().Delete(ctx, a.Subnets, a.Rev); err != nil {
		t.Fatal(err)
	}
	for n := -1; n != 0; {
		select {
		case n = <-views:
		case <-time.After(5 * time.Second):
			t.Fatal("the lost delete was never found")
		}
	}
	if !strings.Contains(log.String(), "missed changes") || !strings.Contains(log.String(), "10.0.1.0-24") {
		t.Fatalf("the listing did not say what the watch had missed:\n%s", log.String())
	}
}
