package overlay

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestMACFromID(t *testing.T) {
	a, b := MACFromID("node-a"), MACFromID("node-a")
	if !bytes.Equal(a, b) {
		t.Fatalf("not deterministic: %s vs %s", a, b)
	}
	seen := map[string]string{}
	for _, id := range []string{"node-a", "node-b", "node-a/v6", "", "0123456789abcdef0123456789abcdef"} {
		m := MACFromID(id)
		if err := checkMAC(m); err != nil {
			t.Errorf("MACFromID(%q) = %s: %v", id, m, err)
		}
		if m[0]&0x02 == 0 {
			t.Errorf("MACFromID(%q) = %s is not locally administered", id, m)
		}
		if other, dup := seen[m.String()]; dup {
			t.Errorf("MACFromID(%q) = MACFromID(%q) = %s", id, other, m)
		}
		seen[m.String()] = id
	}
}

func TestConfigDefaults(t *testing.T) {
	mac := MACFromID("x")
	for _, tc := range []struct {
		name     string
		in       DeviceConfig
		wantName string
		wantErr  string
	}{
		{"v4 defaults", DeviceConfig{Underlay: "eth0", Subnet: netip.MustParsePrefix("10.244.3.1/24"), MAC: mac}, "flannel.1", ""},
		{"v6 defaults", DeviceConfig{Underlay: "eth0", Subnet: netip.MustParsePrefix("fd00:10:0:3::/64"), MAC: mac}, "flannel-v6.1", ""},
		{"vni in name", DeviceConfig{VNI: 42, Underlay: "eth0", Subnet: netip.MustParsePrefix("10.244.3.0/24"), MAC: mac}, "flannel.42", ""},
		{"custom name", DeviceConfig{Name: "vx0", Underlay: "eth0", Subnet: netip.MustParsePrefix("10.244.3.0/24"), MAC: mac}, "vx0", ""},
		{"no underlay", DeviceConfig{Subnet: netip.MustParsePrefix("10.244.3.0/24"), MAC: mac}, "", "no underlay"},
		{"no subnet", DeviceConfig{Underlay: "eth0", MAC: mac}, "", "no subnet"},
		{"no MAC", DeviceConfig{Underlay: "eth0", Subnet: netip.MustParsePrefix("10.244.3.0/24")}, "", "VTEP MAC"},
		{"multicast MAC", DeviceConfig{Underlay: "eth0", Subnet: netip.MustParsePrefix("10.244.3.0/24"), MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}}, "", "multicast"},
		{"VNI range", DeviceConfig{VNI: 1 << 24, Underlay: "eth0", Subnet: netip.MustParsePrefix("10.244.3.0/24"), MAC: mac}, "", "VNI"},
		{"port range", DeviceConfig{Port: 70000, Underlay: "eth0", Subnet: netip.MustParsePrefix("10.244.3.0/24"), MAC: mac}, "", "port"},
		{"families", DeviceConfig{Underlay: "eth0", LocalIP: netip.MustParseAddr("fd00::1"), Subnet: netip.MustParsePrefix("10.244.3.0/24"), MAC: mac}, "", "different families"},
		{"long name", DeviceConfig{Name: "a-very-long-name0", Underlay: "eth0", Subnet: netip.MustParsePrefix("10.244.3.0/24"), MAC: mac}, "", "15 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.wantName || got.Port != DefaultPort || got.VNI == 0 || got.Subnet != got.Subnet.Masked() {
				t.Errorf("got %+v", got)
			}
		})
	}
}

func peer(subnet, public string, mac net.HardwareAddr) Peer {
	p := Peer{VtepMAC: mac}
	p.Subnet, _ = netip.ParsePrefix(subnet)
	p.PublicIP, _ = netip.ParseAddr(public)
	return p
}

var v4target = target{
	own: netip.MustParsePrefix("10.244.1.0/24"), ownMAC: [6]byte(MACFromID("self")),
	self: []netip.Addr{netip.MustParseAddr("192.168.0.1")}, dev: 7, underlay: 2,
}

func TestWantedSkipsMalformedPeers(t *testing.T) {
	m := MACFromID
	good := peer("10.244.2.0/24", "192.168.0.2", m("b"))
	for _, tc := range []struct {
		name string
		p    Peer
	}{
		{"invalid subnet", peer("", "192.168.0.3", m("c"))},
		{"other family subnet", peer("fd00::/64", "192.168.0.3", m("c"))},
		{"unspecified public IP", peer("10.244.3.0/24", "0.0.0.0", m("c"))},
		{"missing public IP", peer("10.244.3.0/24", "", m("c"))},
		{"public IP of the other family", peer("10.244.3.0/24", "fd00::3", m("c"))},
		{"multicast public IP", peer("10.244.3.0/24", "239.1.1.1", m("c"))},
		{"nil MAC", peer("10.244.3.0/24", "192.168.0.3", nil)},
		{"short MAC", peer("10.244.3.0/24", "192.168.0.3", net.HardwareAddr{2, 0, 0})},
		{"our own subnet", peer("10.244.1.0/24", "192.168.0.3", m("c"))},
		{"inside our subnet", peer("10.244.1.128/25", "192.168.0.3", m("c"))},
		{"our own MAC", peer("10.244.3.0/24", "192.168.0.3", m("self"))},
		{"our own public IP", peer("10.244.3.0/24", "192.168.0.1", m("c"))},
		{"same subnet as another peer", peer("10.244.2.0/24", "192.168.0.3", m("c"))},
		{"same MAC as another peer", peer("10.244.3.0/24", "192.168.0.3", m("b"))},
		{"same network address as another peer", peer("10.244.2.0/25", "192.168.0.3", m("c"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			want, skipped := wanted(v4target, []Peer{good, tc.p}, slog.New(slog.NewTextHandler(&logs, nil)))
			if skipped != 1 || len(want.routes) != 1 || len(want.neighs) != 1 || len(want.fdb) != 1 {
				t.Errorf("skipped %d, kept %d routes %d neighs %d fdb", skipped, len(want.routes), len(want.neighs), len(want.fdb))
			}
			if !strings.Contains(logs.String(), "skipping peer") {
				t.Errorf("no warning logged: %q", logs.String())
			}
		})
	}
}

func TestWantedEntries(t *testing.T) {
	mac := MACFromID("b")
	p4 := peer("10.244.2.7/24", "192.168.0.2", mac) // host bits are masked off
	want, _ := wanted(v4target, []Peer{p4}, quiet)
	sn := netip.MustParsePrefix("10.244.2.0/24")
	if r := want.routes[sn]; r != (route{dst: sn, gw: sn.Addr(), link: 7, onlink: true, proto: RouteProtocol}) {
		t.Errorf("route %+v", r)
	}
	if n := want.neighs[sn.Addr()]; n.mac != [6]byte(mac) {
		t.Errorf("neighbour %+v", n)
	}
	if !want.fdb[fdb{mac: [6]byte(mac), dst: netip.MustParseAddr("192.168.0.2")}] {
		t.Errorf("fdb %+v", want.fdb)
	}

	v6 := target{family: family.IPv6, own: netip.MustParsePrefix("fd00:10:0:1::/64"), dev: 8}
	want, skipped := wanted(v6, []Peer{peer("fd00:10:0:2::/64", "fd00:50::2", mac)}, quiet)
	sn6 := netip.MustParsePrefix("fd00:10:0:2::/64")
	if skipped != 0 || want.routes[sn6].gw != sn6.Addr() || !want.routes[sn6].onlink || want.routes[sn6].link != 8 {
		t.Errorf("IPv6 route %+v", want.routes[sn6])
	}
}

func TestWantedDirectRouting(t *testing.T) {
	tg := v4target
	tg.direct = []netip.Prefix{netip.MustParsePrefix("192.168.0.1/24")}
	near := peer("10.244.2.0/24", "192.168.0.2", MACFromID("b"))
	far := peer("10.244.3.0/24", "172.16.0.3", MACFromID("c"))
	want, _ := wanted(tg, []Peer{near, far}, quiet)
	r := want.routes[near.Subnet]
	if r != (route{dst: near.Subnet, gw: near.PublicIP, link: 2, proto: RouteProtocol}) {
		t.Errorf("direct route %+v", r)
	}
	if _, ok := want.neighs[near.Subnet.Addr()]; ok || len(want.fdb) != 1 {
		t.Errorf("a direct peer got vxlan entries: %+v %+v", want.neighs, want.fdb)
	}
	if r := want.routes[far.Subnet]; r.link != 7 || !r.onlink {
		t.Errorf("off-link peer not through the device: %+v", r)
	}

	// host-gw: the same direct routes, off-link peers skipped, MACs unused.
	hg := target{own: tg.own, hostGW: true, underlay: 2, direct: tg.direct}
	near.VtepMAC = nil
	want, skipped := wanted(hg, []Peer{near, far}, quiet)
	if skipped != 1 || len(want.routes) != 1 || want.routes[near.Subnet].gw != near.PublicIP {
		t.Errorf("host-gw: skipped %d, routes %+v", skipped, want.routes)
	}
}

func TestDiff(t *testing.T) {
	m1, m2, m3 := MACFromID("1"), MACFromID("2"), MACFromID("3")
	a := peer("10.244.2.0/24", "192.168.0.2", m1)
	b := peer("10.244.3.0/24", "192.168.0.3", m2)
	c := peer("10.244.4.0/24", "192.168.0.4", m3)
	base, _ := wanted(v4target, []Peer{a, b}, quiet)

	if p := diff(base, base); p.adds()+p.deletes() != 0 {
		t.Errorf("unchanged peers: %+v", p)
	}
	if p := diff(base, newTables(0)); p.adds() != 6 || p.deletes() != 0 {
		t.Errorf("from scratch: %+v", p)
	}

	bMoved := b
	bMoved.VtepMAC = m3 // the node was rebuilt with a new MAC
	moved, _ := wanted(v4target, []Peer{a, bMoved}, quiet)
	p := diff(moved, base)
	if len(p.addNeigh) != 1 || len(p.addFDB) != 1 || len(p.delFDB) != 1 || len(p.addRoute)+len(p.delRoute)+len(p.delNeigh) != 0 {
		t.Errorf("changed MAC: %+v", p)
	}
	if p.delFDB[0].mac != [6]byte(m2) || p.addFDB[0].mac != [6]byte(m3) {
		t.Errorf("changed MAC rewrote the wrong FDB entries: %+v", p)
	}

	gone, _ := wanted(v4target, []Peer{a, c}, quiet)
	p = diff(gone, base)
	if p.adds() != 3 || len(p.delRoute) != 1 || len(p.delNeigh) != 1 || len(p.delFDB) != 1 || p.delRoute[0].dst != b.Subnet {
		t.Errorf("vanished and new peer: %+v", p)
	}

	// A found FDB remote that is not permanent is rewritten as permanent.
	have, _ := wanted(v4target, []Peer{a, b}, quiet)
	for f := range have.fdb {
		have.fdb[f] = false
	}
	if p := diff(base, have); len(p.addFDB) != 2 || p.deletes() != 0 {
		t.Errorf("non-permanent FDB: %+v", p)
	}
}
