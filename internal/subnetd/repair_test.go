package subnetd

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netns"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/subnettest"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestDeviceRepairedAtOnce: with the periodic check an hour away, only the
// netlink subscriptions can put back an entry deleted by hand, or bring
// flannel.1 back after each change with every peer's route, neighbour and
// FDB entry replayed.
func TestDeviceRepairedAtOnce(t *testing.T) {
	node := netnstest.New(t, "sd-repair")
	node.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	node.Run(t, "ip", "addr", "add", "192.168.61.1/24", "dev", "eth0")
	node.Run(t, "ip", "link", "set", "eth0", "up")
	node.Run(t, "ip", "link", "set", "eth1", "up")

	nc, err := subnet.ParseConfig([]byte(`{"Network":"10.0.0.0/16","SubnetMin":"10.0.1.0","SubnetMax":"10.0.50.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	store := subnettest.NewStore(time.Hour)
	peers := []struct{ subnet, ip, mac string }{
		{"10.0.77.0/24", "192.168.61.2", "0e:00:00:00:00:02"},
		{"10.0.78.0/24", "192.168.61.3", "0e:00:00:00:00:03"},
	}
	ctx, cancel := context.WithCancel(context.Background())
	for i, p := range peers {
		s := subnet.Subnets{V4: netip.MustParsePrefix(p.subnet)}
		if _, err := store.Client().Put(ctx, s, vxlanValue(p.ip, "peer"+string(rune('a'+i)), p.mac), 0, true); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &Config{SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), CheckInterval: time.Hour, EtcdTimeout: time.Second}
	ul := underlay{name: "eth0", mtu: 1500, public: [2]netip.Addr{family.IPv4: netip.MustParseAddr("192.168.61.1")}}
	pl, err := newPlane(nc.Backend, ul, "me", log)
	if err != nil {
		t.Fatal(err)
	}
	m, err := newManager(cfg, store.Client(), nc, "me", ul, pl.Backend, log)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{cfg: cfg, log: log, src: m, dp: pl, rules: &fakeRules{}, st: &status{window: time.Hour}, filter: &peerFilter{config: nc, log: log}}
	done := make(chan error)
	// serve's thread stays in the node: the daemon runs there, as under
	// ip netns exec.
	go func() { done <- netns.Do(node.Path, func() error { return d.serve(ctx) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	programmed := func() string { return missing(node, pl.VtepMAC(family.IPv4).String(), peers) }
	waitFor(t, 10*time.Second, "the first programming", programmed)
	changes := []struct {
		name string
		cmd  []string
	}{
		{"a route deleted", []string{"ip", "route", "del", "10.0.77.0/24"}},
		{"a neighbour deleted", []string{"ip", "neigh", "del", "10.0.78.0", "dev", "flannel.1"}},
		{"nexthops deleted (their routes go unannounced)", []string{"ip", "nexthop", "flush", "protocol", "83"}},
		{"an FDB entry deleted", []string{"bridge", "fdb", "del", "0e:00:00:00:00:02", "dev", "flannel.1", "dst", "192.168.61.2"}},
		{"deleted", []string{"ip", "link", "del", "flannel.1"}},
		{"set down", []string{"ip", "link", "set", "flannel.1", "down"}},
		{"MTU changed", []string{"ip", "link", "set", "flannel.1", "mtu", "1300"}},
		{"MAC changed", []string{"ip", "link", "set", "flannel.1", "address", "0e:11:11:11:11:11"}},
		{"address removed", []string{"ip", "addr", "flush", "dev", "flannel.1"}},
		{"learning on", []string{"ip", "link", "set", "flannel.1", "type", "vxlan", "learning"}},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			if out, err := node.Try(c.cmd...); err != nil {
				t.Skipf("this kernel refuses %q: %v %s", strings.Join(c.cmd, " "), err, out)
			}
			start := time.Now()
			waitFor(t, 3*time.Second, "the repair", programmed)
			t.Logf("repaired in %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// missing returns what of a working flannel.1 with the peers' entries is
// not there, "" when nothing.
func missing(node *netnstest.NS, mac string, peers []struct{ subnet, ip, mac string }) string {
	link, _ := node.Try("ip", "-d", "link", "show", "flannel.1")
	addr, _ := node.Try("ip", "-4", "addr", "show", "dev", "flannel.1")
	routes, _ := node.Try("ip", "route")
	neigh, _ := node.Try("ip", "neigh", "show", "dev", "flannel.1")
	fdb, _ := node.Try("bridge", "fdb", "show", "dev", "flannel.1")
	want := map[string][]string{
		"link":   {"mtu 1450", ",UP", "link/ether " + mac, "nolearning"},
		"addr":   {"inet "},
		"routes": {},
		"neigh":  {},
		"fdb":    {},
	}
	for _, p := range peers {
		gw := strings.TrimSuffix(p.subnet, "/24")
		want["routes"] = append(want["routes"], p.subnet+" nhid ", " via "+gw+" dev flannel.1 proto 83 onlink")
		want["neigh"] = append(want["neigh"], gw+" lladdr "+p.mac+" PERMANENT")
		want["fdb"] = append(want["fdb"], p.mac+" dst "+p.ip)
	}
	have := map[string]string{"link": link, "addr": addr, "routes": routes, "neigh": neigh, "fdb": fdb}
	for what, ws := range want {
		for _, w := range ws {
			if !strings.Contains(have[what], w) {
				return what + " lacks " + w + ":\n" + have[what]
			}
		}
	}
	return ""
}

func waitFor(t *testing.T, limit time.Duration, what string, lack func() string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if last = lack(); last == "" {
			return
		}
	}
	t.Fatalf("%s not done within %v: %s", what, limit, last)
}
