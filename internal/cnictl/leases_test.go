package cnictl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/subnet"
	subnetetcd "github.com/cnisuite/cni/pkg/subnet/etcd"
	"github.com/cnisuite/cni/pkg/subnet/etcd/embedded"
	netnstest "github.com/cnisuite/cni/test/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdServer is one embedded etcd on loopback for the package's tests; each
// test works under a prefix of its own. It is started by the first test that
// needs it and stopped, its data removed, by testutil.Main (the package's
// TestMain).
var etcdServer struct {
	once sync.Once
	srv  *embedded.Server
	dir  string
	err  error
}

func testEtcd(t *testing.T) string {
	t.Helper()
	etcdServer.once.Do(func() {
		if etcdServer.dir, etcdServer.err = os.MkdirTemp("", "cnictl-etcd-"); etcdServer.err != nil {
			return
		}
		testutil.AtExit(func() { os.RemoveAll(etcdServer.dir) })
		etcdServer.srv, etcdServer.err = embedded.Start(etcdServer.dir, "http://"+freeAddr(t), "http://"+freeAddr(t), 20*time.Second)
		if etcdServer.err == nil {
			testutil.AtExit(etcdServer.srv.Close)
		}
	})
	if etcdServer.err != nil {
		t.Fatal(etcdServer.err)
	}
	return "http://" + etcdServer.srv.Endpoint()
}

// freeAddr is a loopback address nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// clusterFixture is the etcd side of a node fixture: the network config and
// the leases of this node ("node-a") and two others, one a reservation.
type clusterFixture struct {
	endpoint, prefix, nodeIDFile string
	extra                        []string             // more doctor/leases flags
	peers, self                  *subnetetcd.Registry // self holds this node's etcd lease, apart
}

const (
	dualStackConfig = `{"Network":"10.244.0.0/16","SubnetLen":28,"EnableIPv6":true,"IPv6Network":"fd44::/56","Backend":{"Type":"vxlan"}}`
	nodeA           = "node-a"
)

// leaseSpec is one node as its lease describes it.
type leaseSpec struct {
	id, v4, v6, ip, ip6 string
	leased              bool
}

var (
	ownSpec   = leaseSpec{nodeA, "10.244.1.0/28", "fd44:0:0:1::/64", "192.168.50.1", "fd50::1", true}
	peerSpecs = []leaseSpec{
		{"node-b", "10.244.2.0/28", "fd44:0:0:2::/64", "192.168.50.2", "fd50::2", true},
		{"node-c", "10.244.3.0/28", "fd44:0:0:3::/64", "192.168.50.3", "fd50::3", false},
	}
)

func (s leaseSpec) subnets() subnet.Subnets {
	return subnet.Subnets{V4: netip.MustParsePrefix(s.v4), V6: netip.MustParsePrefix(s.v6)}
}

func (s leaseSpec) mac(f family.Family) net.HardwareAddr {
	return overlay.MACFromID(fmt.Sprint(s.id, "/", f))
}

func (s leaseSpec) value(t *testing.T) []byte {
	t.Helper()
	data := func(f family.Family) json.RawMessage {
		b, _ := json.Marshal(subnet.VXLANData{VNI: 1, VtepMAC: s.mac(f).String()})
		return b
	}
	b, err := json.Marshal(subnet.Attrs{PublicIP: netip.MustParseAddr(s.ip), PublicIPv6: netip.MustParseAddr(s.ip6), BackendType: "vxlan",
		BackendData: data(family.IPv4), BackendV6Data: data(family.IPv6), NodeID: s.id})
	must(t, err)
	return b
}

// peer is the node of s as a peer of family f.
func (s leaseSpec) peer(f family.Family) overlay.Peer {
	sn := s.subnets()
	return overlay.Peer{Subnet: *sn.Of(f), PublicIP: netip.MustParseAddr([2]string{s.ip, s.ip6}[f]), VtepMAC: s.mac(f)}
}

func newCluster(t *testing.T) *clusterFixture {
	t.Helper()
	c := &clusterFixture{endpoint: testEtcd(t), prefix: "/test/" + strings.ReplaceAll(t.Name(), "/", "_"),
		nodeIDFile: filepath.Join(t.TempDir(), "node-id")}
	must(t, os.WriteFile(c.nodeIDFile, []byte(nodeA+"\n"), 0o600))
	c.peers, c.self = c.registry(t), c.registry(t)
	must(t, c.peers.CreateConfig(context.Background(), []byte(dualStackConfig)))
	c.put(t, c.self, ownSpec)
	for _, p := range peerSpecs {
		c.put(t, c.peers, p)
	}
	return c
}

func (c *clusterFixture) registry(t *testing.T) *subnetetcd.Registry {
	t.Helper()
	r, err := subnetetcd.New(subnetetcd.Options{Endpoints: []string{c.endpoint}, Prefix: c.prefix, TTL: time.Hour, Timeout: 5 * time.Second})
	must(t, err)
	t.Cleanup(func() { r.Revoke(context.Background()); r.Close() })
	return r
}

// put writes a lease over whatever is at its key.
func (c *clusterFixture) put(t *testing.T, r *subnetetcd.Registry, s leaseSpec) {
	t.Helper()
	c.putValue(t, r, s, s.value(t))
}

func (c *clusterFixture) putValue(t *testing.T, r *subnetetcd.Registry, s leaseSpec, value []byte) {
	t.Helper()
	ctx := context.Background()
	var prev int64
	if e, err := r.Get(ctx, s.subnets()); err == nil {
		prev = e.Rev
	}
	_, err := r.Put(ctx, s.subnets(), value, prev, s.leased)
	must(t, err)
}

func (c *clusterFixture) del(t *testing.T, s subnet.Subnets) {
	t.Helper()
	e, err := c.peers.Get(context.Background(), s)
	must(t, err)
	must(t, c.peers.Delete(context.Background(), s, e.Rev))
}

// setConfig replaces the network config, as `etcdctl put` does (the
// registry only creates one); nil deletes it.
func (c *clusterFixture) setConfig(t *testing.T, cfg []byte) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	must(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if cfg == nil {
		_, err = cli.Delete(ctx, c.prefix+"/config")
	} else {
		_, err = cli.Put(ctx, c.prefix+"/config", string(cfg))
	}
	must(t, err)
}

func (c *clusterFixture) args() []string {
	return append([]string{"--etcd-endpoints", c.endpoint, "--etcd-prefix", c.prefix, "--etcd-timeout", "2s", "--node-id-file", c.nodeIDFile}, c.extra...)
}

// overlayNode gives the node namespace an underlay (ul0, 192.168.50.1 and
// fd50::1) and this node's vxlan devices programmed by pkg/overlay itself for
// the other leases, as subnetd leaves a healthy node.
func overlayNode(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	ns.Run(t, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
	ns.Run(t, "ip", "addr", "add", "192.168.50.1/24", "dev", "ul0")
	ns.Run(t, "ip", "addr", "add", "fd50::1/64", "dev", "ul0", "nodad")
	ns.Run(t, "ip", "link", "set", "ul0", "up")
	ns.Run(t, "ip", "link", "set", "ul1", "up")
	ns.Do(t, func() error {
		for _, f := range family.All() {
			own := ownSpec.subnets()
			d, err := overlay.EnsureDevice(overlay.DeviceConfig{Underlay: "ul0", Subnet: *own.Of(f), MAC: ownSpec.mac(f), Log: quiet})
			if err != nil {
				return err
			}
			var peers []overlay.Peer
			for _, p := range peerSpecs {
				peers = append(peers, p.peer(f))
			}
			if _, err := d.Reconcile(peers); err != nil {
				return err
			}
		}
		return nil
	})
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func leasesJSON(t *testing.T, f *nodeFixture) map[string]leaseRow {
	t.Helper()
	code, out, stderr := run(append([]string{"leases", "--json", "--netns", f.ns.Path, "--subnet-file", f.subnet}, f.etcd.args()...)...)
	var rows []leaseRow
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil {
		t.Fatalf("exit %d, %v: %s %s", code, err, out, stderr)
	}
	byNode := map[string]leaseRow{}
	for _, r := range rows {
		byNode[cmp(r.NodeID, r.Key)] = r
	}
	return byNode
}

func TestLeases(t *testing.T) {
	f := healthyNode(t)
	now := time.Now()
	rows := leasesJSON(t, f)
	a, b, c := rows["node-a"], rows["node-b"], rows["node-c"]
	if len(rows) != 3 || !a.ThisNode || a.Kernel != "this node" || b.ThisNode || b.Kernel != "ok" || c.Kernel != "ok" {
		t.Fatalf("healthy node: %+v", rows)
	}
	if a.Subnet != "10.244.1.0/28" || a.IPv6Subnet != "fd44:0:0:1::/64" || a.PublicIP != "192.168.50.1" || a.PublicIPv6 != "fd50::1" ||
		a.Backend != "vxlan" || a.VtepMAC != ownSpec.mac(family.IPv4).String() || a.VtepMACv6 != ownSpec.mac(family.IPv6).String() {
		t.Errorf("this node's lease as read: %+v", a)
	}
	if b.Reservation || b.ExpiresAt == nil || b.ExpiresAt.Sub(now) < 59*time.Minute || b.ExpiresAt.Sub(now) > time.Hour+time.Second ||
		b.RenewedAt == nil || now.Sub(*b.RenewedAt) > time.Minute {
		t.Errorf("leased key with a 1h etcd lease: %+v", b)
	}
	if !c.Reservation || c.ExpiresAt != nil || c.RenewedAt != nil {
		t.Errorf("reservation: %+v", c)
	}

	f.ns.Run(t, "ip", "route", "del", "10.244.2.0/28")
	f.ns.Run(t, "bridge", "fdb", "del", peerSpecs[0].mac(family.IPv6).String(), "dev", "flannel-v6.1", "dst", "fd50::2", "self")
	_, err := f.etcd.peers.Put(context.Background(), subnet.Subnets{V4: netip.MustParsePrefix("10.244.9.0/28")}, []byte("{"), 0, false)
	must(t, err)
	rows = leasesJSON(t, f)
	if got := rows["node-b"].Kernel; got != "missing route; missing fdb (v6)" {
		t.Errorf("node-b without its route and IPv6 FDB entry: kernel %q", got)
	}
	if bad := rows["10.244.9.0-28"]; !strings.HasPrefix(bad.Error, "value is not a lease") || !strings.HasPrefix(bad.Kernel, "skipped: bad lease JSON") {
		t.Errorf("garbage lease: %+v", bad)
	}

	code, out, stderr := run(append([]string{"leases", "--netns", f.ns.Path, "--subnet-file", f.subnet}, f.etcd.args()...)...)
	for _, want := range []string{"network 10.244.0.0/16,fd44::/56, backend vxlan VNI 1 port 8472: 4 leases under " + f.etcd.prefix + "/subnets",
		"SUBNET", "node-a (this node)", "reservation", "in 59m", "missing route; missing fdb (v6)"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("exit %d, table lacks %q:\n%s%s", code, want, out, stderr)
		}
	}
}

// TestLeasesWithoutConfig: the leases are listed whatever the config, and
// the header says what is wrong with it; the kernel is not judged.
func TestLeasesWithoutConfig(t *testing.T) {
	f := healthyNode(t)
	for _, tt := range []struct {
		config []byte
		header string
	}{
		{nil, "no network config at " + f.etcd.prefix + "/config (`cnictl doctor` says how to store one): 3 leases"},
		{[]byte(`{"Network":"10.244.0.0/33"}`), "the network config at " + f.etcd.prefix + "/config is unusable (invalid network config: "},
	} {
		f.etcd.setConfig(t, tt.config)
		code, out, stderr := run(append([]string{"leases", "--netns", f.ns.Path, "--subnet-file", f.subnet}, f.etcd.args()...)...)
		if code != 0 || !strings.HasPrefix(out, tt.header) || strings.Count(out, " -\n") != 2 {
			t.Errorf("config %q: exit %d, want the header %q and KERNEL - for the 2 other leases:\n%s%s", tt.config, code, tt.header, out, stderr)
		}
	}
}

func TestLeasesErrors(t *testing.T) {
	closed := "http://" + freeAddr(t)
	tests := []struct {
		args   []string
		code   int
		stderr []string
	}{
		{[]string{"x"}, 2, []string{"leases takes no operands"}},
		{[]string{"--etcd-certfile", "/c.pem"}, 2, []string{"give both --etcd-certfile and --etcd-keyfile"}},
		{[]string{"--etcd-timeout", "0s"}, 2, []string{"--etcd-timeout 0s"}},
		{[]string{"--etcd-endpoints", " , "}, 2, []string{"--etcd-endpoints is empty"}},
		{[]string{"--etcd-cafile", "/nonexistent/ca.pem"}, 1, []string{"etcd CA file", "/nonexistent/ca.pem"}},
		{[]string{"--etcd-endpoints", closed, "--etcd-timeout", "500ms"}, 1,
			[]string{"etcd at " + closed + " did not answer within 500ms", "etcdctl --endpoints " + closed + " endpoint health"}},
	}
	if code, stdout, _ := run("help"); code != 0 || !strings.Contains(stdout, "cnictl leases [--json]") {
		t.Errorf("help: exit %d, %q lists no leases command", code, stdout)
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			start := time.Now()
			code, _, stderr := run(append([]string{"leases"}, tt.args...)...)
			for _, want := range tt.stderr {
				if code != tt.code || !strings.Contains(stderr, want) {
					t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tt.code, want)
				}
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
}
