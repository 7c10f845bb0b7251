package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/cnisuite/cni/pkg/link"
	netnstest "github.com/cnisuite/cni/test/netns"
)

var families = []struct {
	name string
	fam  int
}{{"IPv4", 0}, {"IPv6", 1}}

// TestOverlayDualStack: three nodes, a device per family on each, every pod
// pings every other pod across nodes through the vxlan, and the kernel holds
// the entries flanneld would have made, IPv4 routes on nexthop objects.
func TestOverlayDualStack(t *testing.T) {
	nodes := newCluster(t, 3)
	for _, n := range nodes {
		for _, f := range families {
			n.devs[f.fam] = n.ensure(t, n.cfg(f.fam))
			if !n.devs[f.fam].Created() {
				t.Errorf("%s: first Ensure did not report a created device", f.name)
			}
			// IPv4: FDB, neighbour, nexthop and route per peer; IPv6: no nexthop.
			if s := n.reconcile(t, n.devs[f.fam], peersOf(nodes, n, f.fam)); s.Peers != 2 || s.Added != 8-2*f.fam || s.Deleted != 0 {
				t.Errorf("%s: first reconcile %+v, want 2 peers and %d adds", f.name, s, 8-2*f.fam)
			}
		}
	}
	a, b := nodes[0], nodes[1]
	has(t, "ip -d link", a.ns.Run(t, "ip", "-d", "link", "show", "flannel.1"),
		"mtu 1450", "link/ether "+a.cfg(0).MAC.String(),
		"vxlan id 1 local 192.168.50.1 dev eth0", "dstport 8472", "nolearning")
	has(t, "ip -d link", a.ns.Run(t, "ip", "-d", "link", "show", "flannel-v6.1"),
		"mtu 1430", "vxlan id 1 local fd00:50::1 dev eth0", "dstport 8472", "nolearning")
	has(t, "addresses", a.ns.Run(t, "ip", "addr", "show"), "inet 10.244.1.0/32", "inet6 fd00:244:1::/128")
	nexthopRoute(t, a.ns, "10.244.2.0/24", "10.244.2.0", "flannel.1")
	has(t, "IPv6 routes", a.ns.Run(t, "ip", "-6", "route"), "fd00:244:2::/64 via fd00:244:2:: dev flannel-v6.1 proto 83")
	has(t, "neighbours", a.ns.Run(t, "ip", "neigh", "show", "dev", "flannel.1"), "10.244.2.0 lladdr "+b.cfg(0).MAC.String()+" PERMANENT")
	has(t, "FDB", a.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel.1"), b.cfg(0).MAC.String()+" dst 192.168.50.2 self permanent")
	has(t, "IPv6 FDB", a.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel-v6.1"), b.cfg(1).MAC.String()+" dst fd00:50::2 self permanent")
	for _, f := range families {
		t.Run(f.name+" ping", func(t *testing.T) { pingAll(t, nodes, f.fam) })
	}

	// A restart: Ensure finds the device right, Reconcile finds nothing to do.
	for _, f := range families {
		d := a.ensure(t, a.cfg(f.fam))
		if d.Created() {
			t.Errorf("%s: Ensure recreated a correct device", f.name)
		}
		if s := a.reconcile(t, d, peersOf(nodes, a, f.fam)); s.Writes() != 0 {
			t.Errorf("%s: reconcile after restart wrote %+v", f.name, s)
		}
	}
}

// TestReconcileDiff drives one node through peer changes and checks both the
// kernel's tables and, through netlink notifications, that an unchanged peer
// set makes no write at all.
func TestReconcileDiff(t *testing.T) {
	n := newCluster(t, 1)[0]
	d := n.ensure(t, n.cfg(0))
	pa := peer("10.244.2.0/24", "192.168.50.2", MACFromID("a"))
	pb := peer("10.244.3.0/24", "192.168.50.3", MACFromID("b"))
	n.ns.Run(t, "ip", "route", "add", "10.99.0.0/16", "via", "192.168.50.254", "dev", "eth0") // the operator's
	n.ns.Run(t, "ip", "route", "add", "10.98.0.0/16", "dev", "flannel.1")                     // stale, through our device

	s := n.reconcile(t, d, []Peer{pa, pb, peer("10.244.4.0/24", "0.0.0.0", MACFromID("c"))})
	if s.Peers != 2 || s.Skipped != 1 || s.Added != 8 || s.Deleted != 1 {
		t.Errorf("first reconcile %+v, want 2 peers, 1 skipped, 8 adds, 1 delete", s)
	}
	routes := n.ns.Run(t, "ip", "route")
	has(t, "routes", routes, "10.99.0.0/16 via 192.168.50.254 dev eth0")
	if strings.Contains(routes, "10.98.0.0") {
		t.Errorf("stale route through flannel.1 survived:\n%s", routes)
	}

	w := watchWrites(t, n.ns)
	if s := n.reconcile(t, d, []Peer{pb, pa}); s.Writes() != 0 || s.Peers != 2 {
		t.Errorf("unchanged peers: %+v", s)
	}
	if ev := w(); ev != 0 {
		t.Errorf("unchanged peers: the kernel announced %d route/neighbour changes", ev)
	}

	moved := pb
	moved.VtepMAC = MACFromID("b rebuilt")
	w = watchWrites(t, n.ns)
	if s := n.reconcile(t, d, []Peer{pa, moved}); s.Added != 2 || s.Deleted != 1 {
		t.Errorf("changed MAC: %+v, want 2 adds (neighbour, FDB) and 1 delete (old FDB)", s)
	}
	if ev := w(); ev != 3 {
		t.Errorf("changed MAC: the kernel announced %d changes, want 3", ev)
	}
	fdbOut := n.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel.1")
	has(t, "FDB", fdbOut, moved.VtepMAC.String()+" dst 192.168.50.3")
	has(t, "neighbours", n.ns.Run(t, "ip", "neigh", "show", "dev", "flannel.1"), "10.244.3.0 lladdr "+moved.VtepMAC.String())
	if strings.Contains(fdbOut, pb.VtepMAC.String()) {
		t.Errorf("old MAC left in the FDB:\n%s", fdbOut)
	}

	moved.PublicIP = netip.MustParseAddr("192.168.50.33")
	if s := n.reconcile(t, d, []Peer{pa, moved}); s.Added != 1 || s.Deleted != 1 {
		t.Errorf("changed public IP: %+v", s)
	}
	fdbOut = n.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel.1")
	if !strings.Contains(fdbOut, "dst 192.168.50.33") || strings.Contains(fdbOut, "dst 192.168.50.3 ") {
		t.Errorf("FDB after the public IP changed:\n%s", fdbOut)
	}

	if s := n.reconcile(t, d, []Peer{moved}); s.Added != 0 || s.Deleted != 4 {
		t.Errorf("vanished peer: %+v, want 4 deletes", s)
	}
	for what, out := range map[string]string{
		"routes": n.ns.Run(t, "ip", "route"), "neighbours": n.ns.Run(t, "ip", "neigh", "show", "dev", "flannel.1"),
		"nexthops": n.ns.Run(t, "ip", "nexthop"),
		"FDB":      n.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel.1"),
	} {
		if strings.Contains(out, "10.244.2.0") || strings.Contains(out, pa.VtepMAC.String()) {
			t.Errorf("%s still hold the vanished peer:\n%s", what, out)
		}
	}
	has(t, "routes", n.ns.Run(t, "ip", "route"), "10.99.0.0/16 via 192.168.50.254 dev eth0")
}

// watchWrites subscribes to the route and neighbour (and FDB) notifications
// of ns. The returned function makes one marker write of each kind, waits
// for the markers and returns how many notifications came before them: the
// kernel sends one per write, in order, so this counts writes exactly.
func watchWrites(t *testing.T, ns *netnstest.NS) func() int {
	t.Helper()
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	routes, neighs := make(chan netlink.RouteUpdate, 64), make(chan netlink.NeighUpdate, 64)
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatal(err)
	}
	marker := netip.MustParseAddr("198.51.100.7")
	return func() int {
		ns.Run(t, "ip", "route", "add", "198.51.100.0/24", "dev", "lo")
		ns.Run(t, "ip", "neigh", "add", marker.String(), "lladdr", "02:00:00:00:00:01", "dev", "veth0")
		count := 0
		timeout := time.After(5 * time.Second)
		for seenRoute, seenNeigh := false, false; !seenRoute || !seenNeigh; {
			select {
			case u := <-routes:
				if u.Dst != nil && u.Dst.String() == "198.51.100.0/24" {
					seenRoute = true
				} else if !seenRoute {
					count++
				}
			case u := <-neighs:
				if ip, _ := netip.AddrFromSlice(u.IP); ip.Unmap() == marker {
					seenNeigh = true
				} else if !seenNeigh {
					count++
				}
			case <-timeout:
				t.Fatal("the marker notifications never came")
			}
		}
		ns.Run(t, "ip", "route", "del", "198.51.100.0/24", "dev", "lo")
		ns.Run(t, "ip", "neigh", "del", marker.String(), "dev", "veth0")
		return count
	}
}

// TestEnsureRepairs: the device deleted, changed or replaced by someone is
// put right, and a recreated device gets every peer back.
func TestEnsureRepairs(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0], nodes[1]
	for _, n := range nodes {
		n.devs[0] = n.ensure(t, n.cfg(0))
		n.reconcile(t, n.devs[0], peersOf(nodes, n, 0))
	}
	ping(t, a.pod, b.podIP[0])

	a.ns.Run(t, "ip", "link", "del", "flannel.1")
	a.ns.Do(t, func() error {
		if _, err := a.devs[0].Reconcile(peersOf(nodes, a, 0)); !errors.Is(err, ErrNoDevice) {
			t.Errorf("Reconcile without the device: %v, want ErrNoDevice", err)
		}
		return nil
	})
	d := a.ensure(t, a.cfg(0))
	if !d.Created() {
		t.Error("Ensure did not report recreating the deleted device")
	}
	if s := a.reconcile(t, d, peersOf(nodes, a, 0)); s.Added != 4 {
		t.Errorf("replay after recreation: %+v, want 4 adds", s)
	}
	ping(t, a.pod, b.podIP[0])

	// Attributes the kernel changes in place are fixed without recreating:
	// the FDB entries (which a new link would lack) survive. Taking the link
	// down made the kernel flush its routes and neighbours; Reconcile puts
	// them back, and its nexthops (the kernel deletes those of a device
	// that goes down).
	a.ns.Run(t, "ip", "link", "set", "flannel.1", "down")
	a.ns.Run(t, "ip", "link", "set", "flannel.1", "mtu", "1300", "address", "02:11:22:33:44:55")
	if d = a.ensure(t, a.cfg(0)); d.Created() {
		t.Error("Ensure recreated the device to fix MTU, MAC and state")
	}
	has(t, "ip link", a.ns.Run(t, "ip", "link", "show", "flannel.1"), "mtu 1450", ",UP", a.cfg(0).MAC.String())
	has(t, "FDB", a.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel.1"), b.cfg(0).MAC.String()+" dst 192.168.50.2")
	if s := a.reconcile(t, d, peersOf(nodes, a, 0)); s.Added != 3 || s.Deleted != 0 {
		t.Errorf("after the link went down: %+v, want the nexthop, route and neighbour back", s)
	}
	ping(t, a.pod, b.podIP[0])

	// A new lease: the old address goes, the new one comes.
	cfg := a.cfg(0)
	cfg.Subnet = netip.MustParsePrefix("10.244.77.0/24")
	a.ensure(t, cfg)
	addrs := a.ns.Run(t, "ip", "addr", "show", "flannel.1")
	if !strings.Contains(addrs, "inet 10.244.77.0/32") || strings.Contains(addrs, "10.244.1.0") {
		t.Errorf("addresses after a subnet change:\n%s", addrs)
	}
}

// TestEnsureRecreates: a device whose VNI, port or learning setting is wrong,
// or a link of another type under the name, is replaced.
func TestEnsureRecreates(t *testing.T) {
	a := newCluster(t, 1)[0]
	a.ensure(t, a.cfg(0))
	for _, tc := range []struct{ name, cmd string }{
		{"wrong VNI", "ip link add flannel.1 type vxlan id 9 dstport 8472 local 192.168.50.1 dev eth0 nolearning"},
		{"wrong port", "ip link add flannel.1 type vxlan id 1 dstport 4789 local 192.168.50.1 dev eth0 nolearning"},
		{"learning on", "ip link add flannel.1 type vxlan id 1 dstport 8472 local 192.168.50.1 dev eth0 learning"},
		{"not vxlan", "ip link add flannel.1 type bridge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.ns.Run(t, "ip", "link", "del", "flannel.1")
			a.ns.Run(t, strings.Fields(tc.cmd)...)
			d := a.ensure(t, a.cfg(0))
			if !d.Created() {
				t.Error("not recreated")
			}
			has(t, "ip -d link", a.ns.Run(t, "ip", "-d", "link", "show", "flannel.1"), "vxlan id 1 local 192.168.50.1", "dstport 8472", "nolearning")
		})
	}

}

// TestEnsureNamesTheCollidingDevice: another vxlan device holding our VNI and
// port on the same underlay is named in the error.
func TestEnsureNamesTheCollidingDevice(t *testing.T) {
	n := newCluster(t, 1)[0]
	n.ns.Run(t, "ip", "link", "add", "other-vx", "type", "vxlan", "id", "1", "dstport", "8472", "dev", "eth0")
	n.ns.Do(t, func() error {
		_, err := EnsureDevice(n.cfg(0))
		if err == nil || !strings.Contains(err.Error(), "other-vx") {
			t.Errorf("Ensure = %v, want an error naming other-vx", err)
		}
		return nil
	})
	if out, _ := n.ns.Try("ip", "link", "show", "flannel.1"); !strings.Contains(out, "does not exist") {
		t.Errorf("a failed Ensure left flannel.1 behind:\n%s", out)
	}
}

// TestDirectRouting: peers on the underlay's link are routed without
// encapsulation, and the routes turn back into vxlan ones when it is off.
func TestDirectRouting(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0], nodes[1]
	for _, f := range families {
		for _, n := range nodes {
			cfg := n.cfg(f.fam)
			cfg.DirectRouting = true
			n.devs[f.fam] = n.ensure(t, cfg)
			if s := n.reconcile(t, n.devs[f.fam], peersOf(nodes, n, f.fam)); s.Direct != 1 || s.Added != 1 {
				t.Errorf("%s direct: %+v, want one direct route", f.name, s)
			}
		}
		ping(t, a.pod, b.podIP[f.fam])
	}
	has(t, "routes", a.ns.Run(t, "ip", "route"), "10.244.2.0/24 via 192.168.50.2 dev eth0 proto 83")
	has(t, "IPv6 routes", a.ns.Run(t, "ip", "-6", "route"), "fd00:244:2::/64 via fd00:50::2 dev eth0 proto 83")
	if out := a.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel.1"); strings.Contains(out, "dst") {
		t.Errorf("FDB entries for a direct peer:\n%s", out)
	}

	for _, n := range nodes {
		n.devs[0] = n.ensure(t, n.cfg(0))
		if s := n.reconcile(t, n.devs[0], peersOf(nodes, n, 0)); s.Direct != 0 || s.Added != 4 || s.Deleted != 0 {
			t.Errorf("direct routing off: %+v, want the route rewritten plus nexthop, neighbour and FDB", s)
		}
	}
	nexthopRoute(t, a.ns, "10.244.2.0/24", "10.244.2.0", "flannel.1")
	ping(t, a.pod, b.podIP[0])
}

// TestHostGW: three nodes route each other's subnets via their public IPs.
func TestHostGW(t *testing.T) {
	nodes := newCluster(t, 3)
	for _, f := range families {
		for _, n := range nodes {
			g := HostGW{Underlay: "eth0", Subnet: n.subnet[f.fam], Log: quiet}
			peers := peersOf(nodes, n, f.fam)
			peers = append(peers, peer(fmt.Sprintf("10.%d.0.0/24", 200+f.fam), "172.16.0.9", nil)) // not on the link
			var s Stats
			n.ns.Do(t, func() (err error) { s, err = g.Reconcile(peers); return err })
			if s.Peers != 2 || s.Direct != 2 || s.Added != 2 || s.Skipped != 1 {
				t.Errorf("%s host-gw: %+v", f.name, s)
			}
			n.ns.Do(t, func() (err error) { s, err = g.Reconcile(peers); return err })
			if s.Writes() != 0 {
				t.Errorf("%s host-gw unchanged peers wrote: %+v", f.name, s)
			}
		}
		t.Run(f.name+" ping", func(t *testing.T) { pingAll(t, nodes, f.fam) })
	}
	a := nodes[0]
	has(t, "routes", a.ns.Run(t, "ip", "route"), "10.244.2.0/24 via 192.168.50.2 dev eth0 proto 83", "10.244.3.0/24 via 192.168.50.3 dev eth0 proto 83")
	g := HostGW{Underlay: "eth0", Subnet: a.subnet[0], Log: quiet}
	var s Stats
	a.ns.Do(t, func() (err error) { s, err = g.Reconcile(peersOf(nodes[:2], a, 0)); return err })
	if s.Deleted != 1 || strings.Contains(a.ns.Run(t, "ip", "route"), "10.244.3.0") {
		t.Errorf("vanished host-gw peer: %+v", s)
	}
}

// TestCleanup removes devices (with their routes and nexthops) and our
// routes, and nothing else; Leftovers lists the routes that do not go with
// the devices, also those on nexthops when the route dump does not name
// their device (nexthop_compat_mode off).
func TestCleanup(t *testing.T) {
	nodes := newCluster(t, 2)
	a := nodes[0]
	for _, f := range families {
		a.devs[f.fam] = a.ensure(t, a.cfg(f.fam))
	}
	a.reconcile(t, a.devs[0], []Peer{peer("10.244.20.0/24", "192.168.50.20", MACFromID("x"))})
	g := HostGW{Underlay: "eth0", Subnet: a.subnet[0], Log: quiet}
	a.ns.Do(t, func() error { _, err := g.Reconcile(peersOf(nodes, a, 0)); return err })
	a.ns.Run(t, "ip", "link", "add", "flannel.7", "type", "bridge") // not ours to delete
	a.ns.Run(t, "ip", "link", "add", "vx-custom", "type", "vxlan", "id", "5", "dstport", "8472", "dev", "eth0")
	a.ns.Run(t, "ip", "route", "add", "10.99.0.0/16", "via", "192.168.50.254")
	a.ns.Run(t, "sysctl", "-qw", "net.ipv4.nexthop_compat_mode=0")
	a.ns.Do(t, func() error {
		_, routes, err := Leftovers("vx-custom")
		if len(routes) != 1 || routes[0].Dst.String() != "10.244.2.0/24" {
			t.Errorf("Leftovers lists routes %v, want the host-gw route alone", routes)
		}
		return err
	})
	for range 2 { // idempotent
		a.ns.Do(t, func() error { return Cleanup("vx-custom") })
	}
	links := a.ns.Run(t, "ip", "-o", "link")
	for _, gone := range []string{"flannel.1:", "flannel-v6.1:", "vx-custom:"} {
		if strings.Contains(links, gone) {
			t.Errorf("%s survived cleanup:\n%s", gone, links)
		}
	}
	has(t, "links", links, "flannel.7:")
	routes := a.ns.Run(t, "ip", "route")
	has(t, "routes", routes, "10.99.0.0/16 via 192.168.50.254")
	if strings.Contains(routes, "proto 83") {
		t.Errorf("our routes survived cleanup:\n%s", routes)
	}
	if out := a.ns.Run(t, "ip", "nexthop", "show"); out != "" {
		t.Errorf("nexthops survived cleanup:\n%s", out)
	}
}

// TestUpdateLeavesNoDrift: lease events programmed by Update (one peer
// added, one gone, one with a new MAC and address) leave the kernel exactly
// as a Reconcile wants it; a device deleted under Update makes it fail, and
// the next call dumps and repairs.
func TestUpdateLeavesNoDrift(t *testing.T) {
	n := newCluster(t, 1)[0]
	peers := benchPeers(5)
	d := n.ensure(t, n.cfg(0))
	if s := n.reconcile(t, d, peers[:4]); s.Added != 16 {
		t.Fatalf("first reconcile: %+v", s)
	}
	moved := slices.Clone(peers[1:])
	moved[0].VtepMAC, moved[0].PublicIP = MACFromID("moved"), netip.MustParseAddr("192.168.9.9")
	n.ns.Do(t, func() error {
		for _, step := range []struct {
			peers  []Peer
			writes int
		}{{peers, 4}, {peers[1:], 4}, {moved, 3}, {moved, 0}} {
			if s, err := d.Update(step.peers); err != nil || s.Writes() != step.writes {
				return fmt.Errorf("update to %d peers: %d writes (want %d), %v", len(step.peers), s.Writes(), step.writes, err)
			}
		}
		if s, err := d.Reconcile(moved); err != nil || s.Writes() != 0 {
			return fmt.Errorf("reconcile after updates: %+v, %v; want no drift", s, err)
		}
		if err := link.DeleteIfExists(d.Name()); err != nil {
			return err
		}
		if _, err := d.Update(peers); err == nil {
			return errors.New("update on a deleted device succeeded")
		}
		if _, err := d.Update(peers); !errors.Is(err, ErrNoDevice) {
			return fmt.Errorf("the update after a failed one: %v, want ErrNoDevice from its dump", err)
		}
		return nil
	})
}

// TestTxChecksumOnBrokenKernels: on a kernel before 5.7 (told so by the
// test) Ensure turns the device's tx checksum offload off, also after
// someone turned it on again; on a later kernel it leaves it as it is.
func TestTxChecksumOnBrokenKernels(t *testing.T) {
	a := newCluster(t, 1)[0]
	txOn := func() bool {
		var on bool
		a.ns.Do(t, func() (err error) {
			on, err = link.TxChecksum("flannel.1")
			return err
		})
		return on
	}
	a.ensure(t, a.cfg(0))
	if !txOn() {
		t.Fatalf("kernel %s: offload off after Ensure; want it left on", kernelRelease())
	}
	real := kernelRelease
	t.Cleanup(func() { kernelRelease = real })
	kernelRelease = func() string { return "5.4.0-150-generic" }
	a.ensure(t, a.cfg(0))
	if txOn() {
		t.Error("kernel 5.4: offload still on after Ensure")
	}
	a.ns.Do(t, func() error { return link.SetTxChecksum("flannel.1", true) })
	a.ensure(t, a.cfg(0))
	if txOn() {
		t.Error("kernel 5.4: offload turned on again not turned off by Ensure")
	}
}

func TestTxChecksumBroken(t *testing.T) {
	for release, want := range map[string]bool{
		"5.6.19": true, "4.18.0-305.el8.x86_64": true, "3.10.0-1160.el7": true,
		"5.7.0": false, "5.15.0-91-generic": false, "6.18.44-fc-v1272": false, "garbage": false, "": false,
	} {
		if got := TxChecksumBroken(release); got != want {
			t.Errorf("TxChecksumBroken(%q) = %v, want %v", release, got, want)
		}
	}
}
