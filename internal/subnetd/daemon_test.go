package subnetd

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
	"github.com/cnisuite/cni/pkg/subnet/subnettest"
)

// fakePlane records what the daemon asks of the data plane.
type fakePlane struct {
	mu         sync.Mutex
	own        subnet.Subnets
	peers      peerSet
	ensures    int
	reconciles int // full ones; Update counts as updates
	updates    int
	changes    chan struct{}
}

func (f *fakePlane) Ensure(own subnet.Subnets) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.own = own
	f.ensures++
	return 1450, nil
}

func (f *fakePlane) Reconcile(p peerSet) (overlay.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = p
	f.reconciles++
	return overlay.Stats{Peers: len(p[family.IPv4]) + len(p[family.IPv6])}, nil
}

func (f *fakePlane) Update(p peerSet) (overlay.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = p
	f.updates++
	return overlay.Stats{Peers: len(p[family.IPv4]) + len(p[family.IPv6])}, nil
}

func (f *fakePlane) Changes(context.Context) (<-chan struct{}, error) { return f.changes, nil }

func (f *fakePlane) Host() (overlay.Host, error) { return overlay.Host{}, nil }

// counts returns how often each method ran.
func (f *fakePlane) counts() (ensures, reconciles, updates int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ensures, f.reconciles, f.updates
}

func (f *fakePlane) Teardown() error { return nil }

// fakeRules records the host rules asked for.
type fakeRules struct {
	mu    sync.Mutex
	last  hostrules.Rules
	delay time.Duration // each Ensure takes this long, as iptables forks do
}

func (f *fakeRules) Ensure(ctx context.Context, r hostrules.Rules) ([]string, error) {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = r
	return nil, nil
}

func (f *fakeRules) Teardown(context.Context) error { return nil }

func (f *fakePlane) peerSubnets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.peers[family.IPv4] {
		out = append(out, p.Subnet.String())
	}
	return out
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// testManager is the lease manager of node "me" on ul, publishing what
// its backend would.
func testManager(cfg *Config, reg subnet.Registry, nc subnet.Config, ul underlay, log *slog.Logger) (*subnet.Manager, error) {
	pl, err := newPlane(nc.Backend, ul, "me", log)
	if err != nil {
		return nil, err
	}
	return newManager(cfg, reg, nc, "me", ul, pl.Backend, log)
}

func vxlanValue(ip, id, mac string) []byte {
	d, _ := json.Marshal(subnet.VXLANData{VNI: 1, VtepMAC: mac})
	v, _ := json.Marshal(subnet.Attrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", BackendData: d, NodeID: id})
	return v
}

func TestDaemonFollowsLeases(t *testing.T) {
	// The daemon picks its subnet at random: keep it below the peers' fixed ones.
	nc, err := subnet.ParseConfig([]byte(`{"Network":"10.0.0.0/16","SubnetMin":"10.0.1.0","SubnetMax":"10.0.50.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	store := subnettest.NewStore(time.Hour)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &Config{IPMasq: true, SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), CheckInterval: 50 * time.Millisecond, EtcdTimeout: time.Second}
	m, err := testManager(cfg, store.Client(), nc, underlay{name: "eth0", mtu: 1500, public: [2]netip.Addr{family.IPv4: netip.MustParseAddr("192.168.0.1")}}, log)
	if err != nil {
		t.Fatal(err)
	}
	fp := &fakePlane{}
	st := &status{window: time.Second}
	fr := &fakeRules{}
	d := &daemon{cfg: cfg, log: log, src: m, dp: fp, rules: fr, st: st, filter: &peerFilter{config: nc, log: log}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.serve(ctx) }()
	defer func() { cancel(); <-done }()

	eventually(t, "ready", func() bool { return st.notReady(time.Now()) == "" })
	env, err := envfile.Read(cfg.SubnetFile)
	if err != nil || env.MTU != 1450 || env.Network != nc.Network || !env.Subnet.IsValid() {
		t.Fatalf("subnet.env: %+v, %v", env, err)
	}
	first := fp.own
	eventually(t, "the host rules for the lease (applied on their own goroutine)", func() bool {
		fr.mu.Lock()
		defer fr.mu.Unlock()
		r := fr.last
		return r.Masq && len(r.Nets) == 1 && r.Nets[0].Subnet == first.V4 && r.Nets[0].Network == nc.Network
	})

	// A peer appears, and a malformed lease is skipped.
	peer := subnet.Subnets{V4: netip.MustParsePrefix("10.0.77.0/24")}
	other := store.Client()
	if _, err := other.Put(ctx, peer, vxlanValue("192.168.0.2", "peer", "0e:00:00:00:00:02"), 0, true); err != nil {
		t.Fatal(err)
	}
	bad := subnet.Subnets{V4: netip.MustParsePrefix("10.0.78.0/24")}
	if _, err := other.Put(ctx, bad, []byte(`{"PublicIP":"0.0.0.0","BackendType":"vxlan"}`), 0, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the peer programmed", func() bool { return strings.Join(fp.peerSubnets(), ",") == "10.0.77.0/24" })

	// Our key is deleted by hand: the node takes it back (the same subnet).
	e, _ := other.Get(ctx, first)
	if err := other.Delete(ctx, first, e.Rev); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the lease re-acquired", func() bool {
		e, err := other.Get(ctx, first)
		return err == nil && d.src.Owns(subnet.Lease{Subnets: first}, e)
	})

	// Our key is taken over by another node: the node moves and rewrites subnet.env.
	e, _ = other.Get(ctx, first)
	if _, err := other.Put(ctx, first, vxlanValue("192.168.0.3", "thief", "0e:00:00:00:00:03"), e.Rev, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a new subnet in subnet.env", func() bool {
		env, err := envfile.Read(cfg.SubnetFile)
		return err == nil && env.Subnet.Masked() != first.V4 && env.Subnet.Masked() != peer.V4
	})
	eventually(t, "the thief programmed as a peer", func() bool { return len(fp.peerSubnets()) == 2 })
	if m := st.metrics(time.Now()); !strings.Contains(m, "subnetd_lease_losses_total 2") || !strings.Contains(m, "subnetd_peers 2") {
		t.Fatalf("metrics:\n%s", m)
	}
}

func TestValidate(t *testing.T) {
	ok := func() Config {
		var c Config
		c.flags(flag.NewFlagSet("defaults", flag.ContinueOnError))
		return c
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"defaults", func(*Config) {}, ""},
		{"short ttl", func(c *Config) { c.LeaseTTL = time.Second }, "--lease-ttl"},
		{"margin above ttl", func(c *Config) { c.LeaseTTL = time.Hour; c.RenewMargin = 90 }, "renew-margin"},
		{"embedded not loopback", func(c *Config) { c.EmbeddedClient = "0.0.0.0:2379" }, "loopback"},
		{"external etcd ignores embedded", func(c *Config) { c.EtcdEndpoints = "http://10.0.0.1:2379"; c.EmbeddedClient = "x" }, ""},
		{"bad public ip", func(c *Config) { c.PublicIP = "x" }, "--public-ip"},
		{"cert without key", func(c *Config) { c.EtcdCertFile = "c.pem" }, "--etcd-keyfile"},
		{"port", func(c *Config) { c.HealthzPort = 70000 }, "--healthz-port"},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, "--log-format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok()
			tt.mod(&c)
			err := c.Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestLogFormat: with --log-format json every line is one JSON object
// carrying the level, message and attributes.
func TestLogFormat(t *testing.T) {
	var buf bytes.Buffer
	newLogger(&buf, "info", "json").Info("subnetd starting", "node", "n1")
	var line struct{ Level, Msg, Node string }
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line.Level != "INFO" || line.Msg != "subnetd starting" || line.Node != "n1" {
		t.Fatalf("JSON log line %q: %+v, %v", buf.String(), line, err)
	}
	buf.Reset()
	newLogger(&buf, "info", "text").Info("subnetd starting", "node", "n1")
	if got := buf.String(); !strings.Contains(got, `level=INFO msg="subnetd starting" node=n1`) {
		t.Fatalf("text log line %q", got)
	}
}

// TestExampleNetConf: conf/net-conf.json is a network config subnetd takes.
func TestExampleNetConf(t *testing.T) {
	data, err := os.ReadFile("../../conf/net-conf.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := subnet.ParseConfig(data)
	if err != nil || !c.EnableIPv4 || !c.EnableIPv6 || c.Backend.Type != overlay.TypeVXLAN {
		t.Fatalf("conf/net-conf.json: %+v, %v", c, err)
	}
}

// TestDaemonEventPaths: a lease event is programmed by Update (no kernel
// read), a device change by Ensure and a full Reconcile at once, with the
// periodic check an hour away.
func TestDaemonEventPaths(t *testing.T) {
	nc, err := subnet.ParseConfig([]byte(`{"Network":"10.0.0.0/16","SubnetMin":"10.0.1.0","SubnetMax":"10.0.50.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	store := subnettest.NewStore(time.Hour)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &Config{SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), CheckInterval: time.Hour, EtcdTimeout: time.Second}
	m, err := testManager(cfg, store.Client(), nc, underlay{name: "eth0", mtu: 1500, public: [2]netip.Addr{family.IPv4: netip.MustParseAddr("192.168.0.1")}}, log)
	if err != nil {
		t.Fatal(err)
	}
	fp := &fakePlane{changes: make(chan struct{}, 1)}
	st := &status{window: time.Hour}
	slow := &fakeRules{delay: 2 * time.Second}
	d := &daemon{cfg: cfg, log: log, src: m, dp: fp, rules: slow, st: st, filter: &peerFilter{config: nc, log: log}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.serve(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "the first view programmed", func() bool { _, _, u := fp.counts(); return u > 0 })
	_, reconciles, updates := fp.counts()
	if reconciles != 0 {
		t.Fatalf("at start: %d full reconciles; want the watch's first view by Update only", reconciles)
	}

	// A repair hands the host rules over (2 s each here); the lease event
	// right after must not wait for them.
	ensures, _, _ := fp.counts()
	fp.changes <- struct{}{}
	peer := subnet.Subnets{V4: netip.MustParsePrefix("10.0.77.0/24")}
	put := time.Now()
	if _, err := store.Client().Put(ctx, peer, vxlanValue("192.168.0.2", "peer", "0e:00:00:00:00:02"), 0, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the peer programmed", func() bool { return strings.Join(fp.peerSubnets(), ",") == "10.0.77.0/24" })
	if took := time.Since(put); took > time.Second {
		t.Errorf("the lease event took %v: it waited for the host rules", took)
	}
	if _, _, u := fp.counts(); u <= updates {
		t.Fatalf("the lease event made no Update (%d before, %d after)", updates, u)
	}
	eventually(t, "the repair: Ensure and one full Reconcile", func() bool {
		e, r, _ := fp.counts()
		return e > ensures && r == 1
	})
}

func TestPeerFilterDecodesChangesOnly(t *testing.T) {
	var logged strings.Builder
	nc, err := subnet.ParseConfig([]byte(`{"Network":"10.0.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	f := &peerFilter{config: nc, log: slog.New(slog.NewTextHandler(&logged, nil))}
	own := subnet.Subnets{V4: netip.MustParsePrefix("10.0.1.0/24")}
	a := subnet.Entry{Subnets: subnet.Subnets{V4: netip.MustParsePrefix("10.0.2.0/24")}, Rev: 5, Value: vxlanValue("192.168.0.2", "a", "0e:00:00:00:00:02")}
	bad := subnet.Entry{Subnets: subnet.Subnets{V4: netip.MustParsePrefix("10.0.3.0/24")}, Rev: 6, Value: []byte(`{`)}
	self := subnet.Entry{Subnets: own, Rev: 7, Value: vxlanValue("192.168.0.1", "me", "0e:00:00:00:00:01")}
	steps := []struct {
		name    string
		entries []subnet.Entry
		want    string // peer subnets
		logs    int    // skip lines logged so far
		cached  int
	}{
		{"first view", []subnet.Entry{a, bad, self}, "10.0.2.0/24", 1, 2},
		{"same revisions: nothing decoded or logged again", []subnet.Entry{a, bad, self}, "10.0.2.0/24", 1, 2},
		{"a new revision is read", []subnet.Entry{withRev(a, 9, vxlanValue("192.168.0.9", "a", "0e:00:00:00:00:09")), bad}, "10.0.2.0/24@192.168.0.9", 1, 2},
		{"the bad lease fixed", []subnet.Entry{withRev(bad, 10, vxlanValue("192.168.0.3", "b", "0e:00:00:00:00:03"))}, "10.0.3.0/24", 1, 1},
		{"a vanished lease leaves the cache", []subnet.Entry{}, "", 1, 0},
	}
	for _, s := range steps {
		got, _ := f.peers(s.entries, own)
		var names []string
		for _, p := range got[family.IPv4] {
			n := p.Subnet.String()
			if strings.Contains(s.want, "@") {
				n += "@" + p.PublicIP.String()
			}
			names = append(names, n)
		}
		if g := strings.Join(names, ","); g != s.want {
			t.Errorf("%s: peers %q, want %q", s.name, g, s.want)
		}
		if n := strings.Count(logged.String(), "skipping a lease"); n != s.logs {
			t.Errorf("%s: %d skip lines logged, want %d", s.name, n, s.logs)
		}
		if len(f.cache) != s.cached {
			t.Errorf("%s: %d leases cached, want %d", s.name, len(f.cache), s.cached)
		}
	}
}

func withRev(e subnet.Entry, rev int64, value []byte) subnet.Entry {
	e.Rev, e.Value = rev, value
	return e
}

// TestPeerFilterSkipsHostileLeases: leases that are not the network's, or
// that would take over this node's addresses or routes, are skipped and
// counted, each logged once with its reason however often the filter runs;
// a change of the node is checked again, and logged only when a reason
// changes.
func TestPeerFilterSkipsHostileLeases(t *testing.T) {
	nc, err := subnet.ParseConfig([]byte(`{"Network":"10.0.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	f := &peerFilter{config: nc, log: slog.New(slog.NewTextHandler(&logged, nil))}
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	host := overlay.Host{
		Addrs: []netip.Addr{addr("192.168.0.1"), addr("10.0.60.1")},
		Routes: []overlay.HostRoute{
			{Dst: pfx("0.0.0.0/0"), Gw: addr("192.168.0.254"), Dev: "eth0", Proto: 3},
			{Dst: pfx("192.168.0.0/24"), Dev: "eth0", Proto: 2},
			{Dst: pfx("10.0.61.0/24"), Gw: addr("192.168.0.250"), Dev: "eth0", Proto: 4},
		},
	}
	f.setHost(host)
	entry := func(key, ip string) subnet.Entry {
		s, err := subnet.ParseKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return subnet.Entry{Subnets: s, Rev: 1, Value: vxlanValue(ip, key, "0e:00:00:00:00:09")}
	}
	entries := []subnet.Entry{
		entry("10.0.2.0-24", "192.168.0.2"),
		entry("192.168.0.0-24", "192.168.0.3"),   // the underlay
		entry("192.168.0.254-32", "192.168.0.3"), // the default gateway
		entry("8.8.8.0-24", "192.168.0.3"),
		entry("10.0.3.128-25", "192.168.0.3"), // another length
		entry("10.0.60.0-24", "192.168.0.3"),  // holds an address of the node
		entry("10.0.61.0-24", "192.168.0.3"),  // the node's static route
		entry("10.0.62.0-24", "192.168.0.1"),  // the node's own public IP
	}
	reasons := map[string]string{
		"192.168.0.0-24": "outside the network 10.0.0.0/16", "192.168.0.254-32": "outside the network", "8.8.8.0-24": "outside the network",
		"10.0.3.128-25": "is a /25", "10.0.60.0-24": "holds 10.0.60.1, an address of this node",
		"10.0.61.0-24": "covers this node's route 10.0.61.0/24 via 192.168.0.250", "10.0.62.0-24": "public IP 192.168.0.1 is an address of this node",
	}
	for range 3 {
		got, skipped := f.peers(entries, subnet.Subnets{V4: pfx("10.0.1.0/24")})
		if len(got[family.IPv4]) != 1 || got[family.IPv4][0].Subnet != pfx("10.0.2.0/24") || skipped != len(reasons) {
			t.Fatalf("peers %v, %d skipped; want 10.0.2.0/24 alone and %d skipped", got[family.IPv4], skipped, len(reasons))
		}
	}
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	if len(lines) != len(reasons) {
		t.Errorf("%d lines logged over three calls, want one per skipped lease:\n%s", len(lines), logged.String())
	}
	for key, why := range reasons {
		if n := strings.Count(logged.String(), "key="+key+" "); n != 1 {
			t.Errorf("%s logged %d times", key, n)
		}
		if !strings.Contains(logged.String(), why) {
			t.Errorf("no skip logged with %q:\n%s", why, logged.String())
		}
	}

	// The node's static route goes, and an unrelated one comes: only the
	// lease the route blocked changes, and nothing is logged.
	logged.Reset()
	f.setHost(overlay.Host{Addrs: host.Addrs,
		Routes: append(slices.Clone(host.Routes[:2]), overlay.HostRoute{Dst: pfx("172.16.0.0/12"), Gw: addr("192.168.0.250"), Dev: "eth0", Proto: 4})})
	got, skipped := f.peers(entries, subnet.Subnets{V4: pfx("10.0.1.0/24")})
	if len(got[family.IPv4]) != 2 || skipped != len(reasons)-1 || logged.Len() != 0 {
		t.Errorf("after the route went: peers %v, %d skipped, logged %q", got[family.IPv4], skipped, logged.String())
	}
}
