package etcd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// presenceLeft is what etcd has left of the lease of node's presence record
// under prefix, 0 when there is no record.
func presenceLeft(t *testing.T, r *Registry, prefix, node string) (time.Duration, clientv3.LeaseID) {
	t.Helper()
	resp, err := r.cli.Get(context.Background(), prefix+"/subnetd/nodes/"+node)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0, 0
	}
	id := clientv3.LeaseID(resp.Kvs[0].Lease)
	ttl, err := r.cli.TimeToLive(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(ttl.TTL) * time.Second, id
}

// TestPresence: the record is <prefix>/subnetd/nodes/<node> on a short lease
// of its own, renewed while the registry is open and left to expire once it
// is closed; the same owner's next run takes that lease over, another owner
// loses the swap without leaving a lease behind, and a release deletes it.
func TestPresence(t *testing.T) {
	ctx := context.Background()
	p := prefixOf(t)
	r := newRegistry(t, p)
	revokeAll(t, r)
	r.presenceTTL = 3 * time.Second // renewed every second
	if _, err := r.Presence(ctx, "n"); !errors.Is(err, subnet.ErrNotFound) {
		t.Fatalf("no record yet: %v", err)
	}
	rec, err := r.ClaimPresence(ctx, "n", "run-a", []byte(`{"Instance":"a"}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.Presence(ctx, "n"); err != nil || string(got.Value) != `{"Instance":"a"}` || got.Rev != rec.Rev {
		t.Fatalf("record %+v, %v", got, err)
	}
	time.Sleep(4 * time.Second) // past its TTL
	if left, id := presenceLeft(t, r, p, "n"); left < time.Second || id != PresenceLeaseID(p, "n", "run-a") {
		t.Fatalf("after its TTL: %v left on lease %x; want it renewed, on run-a's lease", left, int64(id))
	}

	// Another owner claiming at the revision it read, after the record changed.
	other := newRegistry(t, p)
	if _, err := other.ClaimPresence(ctx, "n", "run-b", []byte(`{"Instance":"b"}`), rec.Rev-1); !errors.Is(err, subnet.ErrConflict) {
		t.Fatalf("a stale claim: %v", err)
	}
	if n := len(leases(t, r)); n != 1 {
		t.Fatalf("%d etcd leases after a lost claim, want the record's alone", n)
	}

	// The same owner's next run takes the record and its lease over.
	r.Close()
	next := newRegistry(t, p)
	if _, err := next.ClaimPresence(ctx, "n", "run-a", []byte(`{"Instance":"a","Boot":"x"}`), rec.Rev); err != nil {
		t.Fatal(err)
	}
	if n := len(leases(t, next)); n != 1 {
		t.Fatalf("%d etcd leases after a restart, want one", n)
	}
	if err := next.ReleasePresence(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := next.Presence(ctx, "n"); !errors.Is(err, subnet.ErrNotFound) || len(leases(t, next)) != 0 {
		t.Fatalf("after release: %v, %d leases", err, len(leases(t, next)))
	}
}

// TestPresenceExpiresAfterClose: a closed registry's record (a stopped
// subnetd's) is gone after its TTL.
func TestPresenceExpiresAfterClose(t *testing.T) {
	ctx := context.Background()
	p := prefixOf(t)
	r := newRegistry(t, p)
	r.presenceTTL = 2 * time.Second
	if _, err := r.ClaimPresence(ctx, "n", "run-a", []byte(`{}`), 0); err != nil {
		t.Fatal(err)
	}
	r.Close()
	watcher := newRegistry(t, p)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := watcher.Presence(ctx, "n"); errors.Is(err, subnet.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the record of a closed registry outlived its TTL")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func leases(t *testing.T, r *Registry) []clientv3.LeaseStatus {
	t.Helper()
	resp, err := r.cli.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Leases
}
