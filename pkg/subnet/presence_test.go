package subnet_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/subnettest"
)

// cloned is a Manager under the NodeID "shared", as every machine cloned
// from one image is, told apart by its instance.
func cloned(t *testing.T, store *subnettest.Store, ip string, inst subnet.Instance) *subnet.Manager {
	t.Helper()
	m := newManager(t, store.Client(), mustConfig(t, net22), "shared", ip)
	m.Instance, m.IdentityHint = inst, "fix: give each node a --node-id of its own"
	return m
}

// leaseOf reads the key of s: its public IP, and whether it is there.
func leaseOf(t *testing.T, store *subnettest.Store, s subnet.Subnets) (netip.Addr, bool) {
	t.Helper()
	e, err := store.Client().Get(context.Background(), s)
	if err != nil {
		return netip.Addr{}, false
	}
	var a subnet.Attrs
	if err := json.Unmarshal(e.Value, &a); err != nil {
		t.Fatal(err)
	}
	return a.PublicIP, true
}

// TestIdentityHeldByAnother: a second machine under a NodeID another live
// run holds takes nothing (no key, no store lease, the holder's lease and
// checks untouched) and is told who holds it and the fix. Once the holder
// is gone (its record expired), it proceeds; the first, back, has lost its
// lease and, released, leaves alone what the second now holds.
func TestIdentityHeldByAnother(t *testing.T) {
	ctx := context.Background()
	store := subnettest.NewStore(time.Hour)
	first := cloned(t, store, "192.168.0.1", subnet.Instance{"token-a", "boot-a"})
	l, err := first.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second := cloned(t, store, "192.168.0.2", subnet.Instance{"token-b", "boot-b"})
	for range 3 {
		_, err = second.Acquire(ctx)
		var inUse *subnet.IdentityInUseError
		if !errors.As(err, &inUse) || !errors.Is(err, subnet.ErrIdentityInUse) || inUse.SameToken {
			t.Fatalf("second machine: %v, want IdentityInUseError", err)
		}
		for _, want := range []string{`"shared"`, "192.168.0.1", "--node-id"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q does not say %s", err, want)
			}
		}
		if ip, ok := leaseOf(t, store, l.Subnets); !ok || ip != netip.MustParseAddr("192.168.0.1") || store.KeyCount() != 1 || store.AliveLeases() != 1 {
			t.Fatalf("after the refusal: lease at %v (%v), %d keys, %d store leases; want the first's alone", ip, ok, store.KeyCount(), store.AliveLeases())
		}
		if l, err = first.Check(ctx, l); err != nil {
			t.Fatalf("the first's check: %v", err)
		}
	}

	store.ExpirePresence("shared") // the first stopped for good
	l2, err := second.Acquire(ctx)
	if err != nil || l2.Subnets != l.Subnets {
		t.Fatalf("after the holder is gone: %v, %v; want the identity's lease %v", l2.Subnets, err, l.Subnets)
	}
	if _, err := first.Check(ctx, l); !errors.Is(err, subnet.ErrLeaseLost) || !errors.Is(err, subnet.ErrIdentityInUse) {
		t.Fatalf("the first back: %v, want ErrLeaseLost for ErrIdentityInUse", err)
	}
	if err := first.Release(ctx, l); !errors.Is(err, subnet.ErrIdentityInUse) {
		t.Fatalf("the first's release: %v, want it refused", err)
	}
	if ip, ok := leaseOf(t, store, l.Subnets); !ok || ip != netip.MustParseAddr("192.168.0.2") || store.AliveLeases() != 1 {
		t.Fatalf("after the first's release: lease at %v (%v), %d store leases; want the second's kept", ip, ok, store.AliveLeases())
	}
}

// TestIdentitySameNode: the same node's run proceeds at once after a
// restart (also at a new address, keeping its subnet); after a reboot (same
// token, another boot ID, as a machine cloned with the data directory has)
// it waits for the previous boot's record to expire, then keeps its subnet.
func TestIdentitySameNode(t *testing.T) {
	ctx := context.Background()
	inst := subnet.Instance{"token-a", "boot-1"}
	tests := []struct {
		name  string
		ip    string
		again subnet.Instance
		waits bool
	}{
		{"restart", "192.168.0.1", inst, false},
		{"new address", "192.168.0.9", inst, false},
		{"reboot", "192.168.0.1", subnet.Instance{"token-a", "boot-2"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := subnettest.NewStore(time.Hour)
			l, err := cloned(t, store, "192.168.0.1", inst).Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			next := cloned(t, store, tt.ip, tt.again)
			got, err := next.Acquire(ctx)
			var inUse *subnet.IdentityInUseError
			if tt.waits {
				if !errors.As(err, &inUse) || !inUse.SameToken || !strings.Contains(err.Error(), "before a reboot") {
					t.Fatalf("after a reboot: %v, want a wait for the previous boot's record", err)
				}
				store.ExpirePresence("shared")
				got, err = next.Acquire(ctx)
			}
			if err != nil || got.Subnets != l.Subnets {
				t.Fatalf("got %v, %v; want %v kept", got.Subnets, err, l.Subnets)
			}
			if ip, _ := leaseOf(t, store, l.Subnets); ip != netip.MustParseAddr(tt.ip) || store.AliveLeases() != 1 {
				t.Fatalf("lease at %v, %d store leases; want %s on the one store lease", ip, store.AliveLeases(), tt.ip)
			}
		})
	}
}

// TestIdentityRace: two machines under one NodeID start at once on an
// empty store: one leases, the other is refused, and one key exists.
func TestIdentityRace(t *testing.T) {
	for i := range 50 {
		store := subnettest.NewStore(time.Hour)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for n := range 2 {
			m := cloned(t, store, "192.168.0."+string(rune('1'+n)), subnet.Instance{Token: string(rune('a' + n))})
			m.Rand = rand.New(rand.NewPCG(uint64(i), uint64(n)))
			wg.Go(func() { _, errs[n] = m.Acquire(context.Background()) })
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) || !errors.Is(errors.Join(errs...), subnet.ErrIdentityInUse) || store.KeyCount() != 1 {
			t.Fatalf("round %d: %v, %d keys; want one lease and one refusal", i, errs, store.KeyCount())
		}
	}
}

// TestCheckClaimsPresenceAgain: a record that expired while nobody else
// claimed it (the store out of reach past PresenceTTL) is claimed again.
func TestCheckClaimsPresenceAgain(t *testing.T) {
	ctx := context.Background()
	store := subnettest.NewStore(time.Hour)
	m := cloned(t, store, "192.168.0.1", subnet.Instance{"token-a", "boot-a"})
	l, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	store.ExpirePresence("shared")
	if _, err := m.Check(ctx, l); err != nil {
		t.Fatal(err)
	}
	rec, err := store.Client().Presence(ctx, "shared")
	if err != nil {
		t.Fatalf("no record after the check: %v", err)
	}
	if p, err := subnet.ParsePresence(rec.Value); err != nil || p.Instance != "token-a" || p.PublicIP != netip.MustParseAddr("192.168.0.1") {
		t.Fatalf("record %s: %+v, %v", rec.Value, p, err)
	}
	if _, err := cloned(t, store, "192.168.0.2", subnet.Instance{"token-b", "boot-b"}).Acquire(ctx); !errors.Is(err, subnet.ErrIdentityInUse) {
		t.Fatalf("another machine after the claim: %v", err)
	}
}

func FuzzPresence(f *testing.F) {
	f.Add([]byte(`{"PublicIP":"192.168.0.1","Instance":"a","Boot":"b"}`))
	f.Add([]byte(`{"PublicIPv6":"fd00::1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := subnet.ParsePresence(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", p, err)
		}
		if back, err := subnet.ParsePresence(b); err != nil || back != p {
			t.Fatalf("%s -> %+v -> %s -> %+v, %v", data, p, b, back, err)
		}
		_ = p.Addrs()
	})
}
