package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/etcd/embedded"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var server *embedded.Server

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "subnet-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	server, err = embedded.Start(dir, "http://"+freePort(), "http://"+freePort(), 20*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer server.Close()
	return m.Run()
}

// freePort returns a loopback address nobody listens on (a race with other
// processes is possible but unlikely).
func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newRegistry returns a client under a prefix of the test's own.
func newRegistry(t *testing.T, prefix string) *Registry {
	t.Helper()
	r, err := New(Options{Endpoints: []string{server.Endpoint()}, Prefix: prefix, TTL: time.Hour, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func prefixOf(t *testing.T) string { return "/test/" + strings.ReplaceAll(t.Name(), "/", "_") }

func manager(t *testing.T, r subnet.Registry, network, id, ip string) *subnet.Manager {
	t.Helper()
	cfg, err := subnet.ParseConfig([]byte(network))
	if err != nil {
		t.Fatal(err)
	}
	return &subnet.Manager{Registry: r, Config: cfg, Node: subnet.Attrs{PublicIP: netip.MustParseAddr(ip), NodeID: id},
		RenewMargin: time.Minute, Log: quiet}
}

const net22 = `{"Network":"10.0.0.0/22"}`

// leasesHeld counts the etcd leases on the server but the presence records'
// (TestPresence counts those); tests run one at a time.
func leasesHeld(t *testing.T, r *Registry) int {
	t.Helper()
	resp, err := r.cli.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range resp.Leases {
		if !holdsPresence(t, r, l.ID) {
			n++
		}
	}
	return n
}

// holdsPresence reports whether lease id holds a presence record.
func holdsPresence(t *testing.T, r *Registry, id clientv3.LeaseID) bool {
	t.Helper()
	ttl, err := r.cli.TimeToLive(context.Background(), id, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	return len(ttl.Keys) > 0 && strings.Contains(string(ttl.Keys[0]), "/subnetd/nodes/")
}

func revokeAll(t *testing.T, r *Registry) {
	t.Helper()
	resp, _ := r.cli.Leases(context.Background())
	for _, l := range resp.Leases {
		_, _ = r.cli.Revoke(context.Background(), l.ID)
	}
}

func TestConfig(t *testing.T) {
	ctx := context.Background()
	r := newRegistry(t, prefixOf(t))
	if _, err := r.Config(ctx); !errors.Is(err, subnet.ErrNotFound) {
		t.Fatalf("Config on empty etcd: %v", err)
	}
	if err := r.CreateConfig(ctx, []byte(net22)); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateConfig(ctx, []byte(`{}`)); !errors.Is(err, subnet.ErrConflict) {
		t.Fatalf("second create: %v", err)
	}
	raw, err := r.cli.Get(ctx, prefixOf(t)+"/config")
	if err != nil || len(raw.Kvs) != 1 || string(raw.Kvs[0].Value) != net22 {
		t.Fatalf("config key: %v, %v", raw, err)
	}
}

func TestAcquireLayoutAndReuse(t *testing.T) {
	ctx := context.Background()
	p := prefixOf(t)
	r := newRegistry(t, p)
	revokeAll(t, r)
	m := manager(t, r, net22, "node-a", "192.168.0.1")
	m.Node.BackendType = "vxlan"
	m.Node.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`)
	l, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := r.cli.Get(ctx, p+"/subnets/"+l.Subnets.Key())
	if err != nil || len(raw.Kvs) != 1 || raw.Kvs[0].Lease == 0 {
		t.Fatalf("lease key: %v, %v", raw, err)
	}
	// flanneld's reader: the value decodes into its LeaseAttrs field names.
	var flannel struct {
		PublicIP    string
		BackendType string
		BackendData struct {
			VNI     int
			VtepMAC string
		}
	}
	if err := json.Unmarshal(raw.Kvs[0].Value, &flannel); err != nil || flannel.PublicIP != "192.168.0.1" || flannel.BackendData.VtepMAC != "0e:00:00:00:00:01" {
		t.Fatalf("value %s: %+v, %v", raw.Kvs[0].Value, flannel, err)
	}
	if l.Expiry.Before(time.Now().Add(59 * time.Minute)) {
		t.Fatalf("expiry %v, want about an hour from now", l.Expiry)
	}
	// A restart (a new client) finds the lease and adopts its etcd lease.
	r2 := newRegistry(t, p)
	again, err := manager(t, r2, net22, "node-a", "192.168.0.77").Acquire(ctx)
	if err != nil || again.Subnets != l.Subnets {
		t.Fatalf("restart got %v, %v; want %v", again.Subnets, err, l.Subnets)
	}
	raw2, _ := r.cli.Get(ctx, p+"/subnets/"+l.Subnets.Key())
	if raw2.Kvs[0].Lease != raw.Kvs[0].Lease || leasesHeld(t, r) != 1 {
		t.Fatalf("etcd lease %x then %x, %d held: want the same one and no orphan", raw.Kvs[0].Lease, raw2.Kvs[0].Lease, leasesHeld(t, r))
	}
}

func TestRaceOneFreeSubnet(t *testing.T) {
	ctx := context.Background()
	for round := range 10 {
		p := fmt.Sprintf("%s/%d", prefixOf(t), round)
		seed := newRegistry(t, p)
		for _, k := range []string{"10.0.1.0-24", "10.0.2.0-24"} {
			s, _ := subnet.ParseKey(k)
			if _, err := seed.Put(ctx, s, []byte(`{"PublicIP":"192.168.0.9"}`), 0, false); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for n := range 2 {
			m := manager(t, newRegistry(t, p), net22, fmt.Sprint("node", n), fmt.Sprint("192.168.0.", n+1))
			wg.Go(func() { _, errs[n] = m.Acquire(ctx) })
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: errors %v; want exactly one winner", round, errs)
		}
		for _, err := range errs {
			if err != nil && !errors.Is(err, subnet.ErrNoSubnets) {
				t.Fatalf("loser: %v", err)
			}
		}
	}
}

func TestReservationStaysOne(t *testing.T) {
	ctx := context.Background()
	r := newRegistry(t, prefixOf(t))
	s, _ := subnet.ParseKey("10.0.2.0-24")
	if _, err := r.Put(ctx, s, []byte(`{"PublicIP":"192.168.0.1"}`), 0, false); err != nil {
		t.Fatal(err)
	}
	m := manager(t, r, net22, "node-a", "192.168.0.1")
	l, err := m.Acquire(ctx)
	if err != nil || l.Subnets != s || !l.Reserved {
		t.Fatalf("acquired %+v, %v; want the reservation", l, err)
	}
	if l, err = m.Check(ctx, l); err != nil || !l.Reserved {
		t.Fatalf("check: %+v, %v", l, err)
	}
	if err := m.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	e, err := r.Get(ctx, s)
	if err != nil || e.Lease != 0 {
		t.Fatalf("after release: %+v, %v; want the reservation kept, without an etcd lease", e, err)
	}
}

func TestRenewalAndLoss(t *testing.T) {
	ctx := context.Background()
	r := newRegistry(t, prefixOf(t))
	revokeAll(t, r)
	m := manager(t, r, net22, "node-a", "192.168.0.1")
	l, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Renewal: with the expiry inside the margin, Check renews.
	l.Expiry = time.Now().Add(time.Second)
	if l, err = m.Check(ctx, l); err != nil || l.Expiry.Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("renew: %+v, %v", l, err)
	}
	// Loss: the etcd lease is revoked (as at expiry); the key goes with it.
	e, _ := r.Get(ctx, l.Subnets)
	if _, err := r.cli.Revoke(ctx, clientv3.LeaseID(e.Lease)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Check(ctx, l); !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("check after loss: %v", err)
	}
	again, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e2, _ := r.Get(ctx, again.Subnets)
	if e2.Lease == 0 || e2.Lease == e.Lease || leasesHeld(t, r) != 1 {
		t.Fatalf("re-acquired on etcd lease %x (lost %x), %d held", e2.Lease, e.Lease, leasesHeld(t, r))
	}
	if err := m.Release(ctx, again); err != nil || leasesHeld(t, r) != 0 {
		t.Fatalf("release: %v, %d etcd leases left", err, leasesHeld(t, r))
	}
}

func TestWatchAndCompaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := newRegistry(t, prefixOf(t))
	s1, _ := subnet.ParseKey("10.0.1.0-24")
	e1, err := r.Put(ctx, s1, []byte(`{}`), 0, true)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := subnet.ParseKey("10.0.2.0-24")
	if _, err := r.Put(ctx, s2, []byte(`{}`), 0, true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.Compact(ctx, e1.Rev+1); err != nil {
		t.Fatal(err)
	}
	if ev := <-r.Watch(ctx, e1.Rev); !errors.Is(ev.Err, subnet.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %+v", ev)
	}
	// The Manager's view follows puts and deletes.
	m := manager(t, r, net22, "node-a", "192.168.0.1")
	views := make(chan int, 100)
	go m.Watch(ctx, func(es []subnet.Entry) { views <- len(es) })
	want := func(n int) {
		t.Helper()
		for {
			select {
			case got := <-views:
				if got == n {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no view with %d leases", n)
			}
		}
	}
	want(2)
	s3, _ := subnet.ParseKey("10.0.3.0-24")
	if _, err := r.Put(ctx, s3, []byte(`{}`), 0, false); err != nil {
		t.Fatal(err)
	}
	want(3)
	if err := r.Revoke(ctx); err != nil {
		t.Fatal(err)
	}
	want(1)
}

func TestUnreachable(t *testing.T) {
	r, err := New(Options{Endpoints: []string{freePort()}, TTL: time.Hour, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	_, _, err = r.List(context.Background())
	if err == nil || time.Since(start) > 2*time.Second || !strings.Contains(err.Error(), "did not answer within") {
		t.Fatalf("List against nothing: %v after %v", err, time.Since(start))
	}
}

// TestOwnedLeaseAfterKill: a run killed between granting its etcd lease and
// writing its key leaves that lease behind. Without an owner the next run
// grants another and the first stays, holding nothing, for its TTL; with
// one, the next run's grant meets the same ID and takes that lease over.
func TestOwnedLeaseAfterKill(t *testing.T) {
	for _, tc := range []struct {
		owner string
		held  int
	}{{"", 2}, {"node-a", 1}} {
		t.Run("owner="+tc.owner, func(t *testing.T) {
			ctx := context.Background()
			o := Options{Endpoints: []string{server.Endpoint()}, Prefix: prefixOf(t), TTL: time.Hour, Timeout: 5 * time.Second, LeaseOwner: tc.owner}
			killed, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			revokeAll(t, killed)
			if _, err := killed.heldLease(ctx); err != nil { // granted; the key never written
				t.Fatal(err)
			}
			killed.Close()
			next, err := New(o)
			if err != nil {
				t.Fatal(err)
			}
			defer next.Close()
			l, err := manager(t, next, net22, "node-a", "192.168.0.1").Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			e, _ := next.Get(ctx, l.Subnets)
			if n := leasesHeld(t, next); n != tc.held {
				t.Errorf("%d etcd leases held, want %d", n, tc.held)
			}
			if tc.owner != "" && clientv3.LeaseID(e.Lease) != LeaseIDFor(prefixOf(t), tc.owner) {
				t.Errorf("key on lease %x, want the owner's %x", e.Lease, int64(LeaseIDFor(prefixOf(t), tc.owner)))
			}
			revokeAll(t, next)
		})
	}
}

// TestLeaseIDFor: positive, stable, and distinct per owner and prefix.
func TestLeaseIDFor(t *testing.T) {
	a, b, c := LeaseIDFor("/p", "node-a"), LeaseIDFor("/p", "node-b"), LeaseIDFor("/q", "node-a")
	if a <= 0 || b <= 0 || c <= 0 || a == b || a == c || a != LeaseIDFor("/p", "node-a") {
		t.Fatalf("ids %x %x %x", int64(a), int64(b), int64(c))
	}
}
