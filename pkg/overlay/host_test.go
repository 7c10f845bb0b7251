package overlay

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestHostConflict(t *testing.T) {
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	h := Host{
		Addrs: []netip.Addr{addr("192.168.90.10"), addr("10.95.60.1"), addr("fd00:90::10")},
		Routes: []HostRoute{
			{Dst: pfx("0.0.0.0/0"), Gw: addr("192.168.90.254"), Dev: "eth0", Proto: 3},
			{Dst: pfx("192.168.90.0/24"), Dev: "eth0", Proto: 2},
			{Dst: pfx("10.0.0.0/8"), Gw: addr("192.168.90.1"), Dev: "eth0", Proto: 4},
			{Dst: pfx("10.95.61.128/25"), Gw: addr("192.168.90.1"), Dev: "eth0", Proto: 4},
			{Dst: pfx("10.95.70.0/24"), Gw: addr("192.168.90.70"), Dev: "eth0", Proto: 3}, // flanneld's host-gw route for the peer
			{Dst: pfx("10.95.71.0/24"), Gw: addr("192.168.90.99"), Dev: "eth0", Proto: 3},
		},
	}
	peer := func(sn, ip string) Peer { return Peer{Subnet: pfx(sn), PublicIP: addr(ip)} }
	tests := []struct {
		name string
		p    Peer
		want string // in the error; "" for none
	}{
		{"an ordinary peer, inside the broader 10.0.0.0/8 route", peer("10.95.5.0/24", "192.168.90.5"), ""},
		{"the underlay's subnet", peer("192.168.90.0/24", "192.168.90.5"), "holds 192.168.90.10, an address of this node"},
		{"the default gateway", peer("192.168.90.254/32", "192.168.90.5"), "holds the gateway of this node's route default via 192.168.90.254 dev eth0 proto boot"},
		{"a subnet holding the node's other address", peer("10.95.60.0/24", "192.168.90.5"), "holds 10.95.60.1"},
		{"a subnet covering a more specific route", peer("10.95.61.0/24", "192.168.90.5"), "covers this node's route 10.95.61.128/25 via 192.168.90.1 dev eth0 proto static"},
		{"the node's own public IP", peer("10.95.6.0/24", "192.168.90.10"), "public IP 192.168.90.10 is an address of this node"},
		{"flanneld's route for this very peer", peer("10.95.70.0/24", "192.168.90.70"), ""},
		{"flanneld's route for the subnet via another node", peer("10.95.71.0/24", "192.168.90.70"), "covers this node's route 10.95.71.0/24 via 192.168.90.99"},
		{"IPv6", peer("fd00:90::/64", "fd00:91::1"), "holds fd00:90::10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := h.Conflict(tt.p)
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Conflict(%s) = %v, want %q", tt.p, err, tt.want)
			}
		})
	}
}

// TestReadHost: the node's addresses and routes, both families, the
// default route included; the overlay's device and routes left out.
func TestReadHost(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	n := newCluster(t, 1)[0]
	n.ns.Run(t, "ip", "route", "add", "default", "via", "192.168.50.254")
	n.ns.Run(t, "ip", "route", "add", "10.99.0.0/16", "nexthop", "via", "192.168.50.7", "nexthop", "via", "192.168.50.8")
	d := n.ensure(t, n.cfg(0))
	n.reconcile(t, d, []Peer{{Subnet: netip.MustParsePrefix("10.244.9.0/24"), PublicIP: netip.MustParseAddr("192.168.50.9"), VtepMAC: MACFromID("9")}})
	n.ns.Run(t, "ip", "route", "add", "10.98.0.0/16", "via", "192.168.50.9", "proto", "83")
	var h Host
	n.ns.Do(t, func() (err error) { h, err = ReadHost(); return err })
	var routes []string
	for _, r := range h.Routes {
		routes = append(routes, r.String())
	}
	got := strings.Join(routes, "\n")
	has(t, "routes", got, "default via 192.168.50.254 dev eth0 proto boot", "192.168.50.0/24 dev eth0 proto kernel",
		"10.99.0.0/16 via 192.168.50.7 dev eth0", "10.99.0.0/16 via 192.168.50.8 dev eth0", "fd00:50::/64 dev eth0 proto kernel")
	if strings.Contains(got, "10.244.9.0") || strings.Contains(got, "10.98.0.0") || strings.Contains(got, "flannel") {
		t.Errorf("the overlay's routes are among the host's:\n%s", got)
	}
	for _, a := range []string{"192.168.50.1", "fd00:50::1", "10.244.1.1", "127.0.0.1"} {
		if !slices.Contains(h.Addrs, netip.MustParseAddr(a)) {
			t.Errorf("address %s missing from %v", a, h.Addrs)
		}
	}
	if slices.Contains(h.Addrs, n.subnet[0].Addr()) {
		t.Errorf("flannel.1's address %s is among the host's", n.subnet[0].Addr())
	}
}
