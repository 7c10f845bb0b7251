package overlay

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestRoutesOnNexthops: every IPv4 peer route goes through a nexthop
// object of ours of its own, whose gateway and device are what the
// kernel's lookup and the pings take; IPv6 routes stay plain. With
// net.ipv4.nexthop_compat_mode off in the node (route dumps then lack the
// gateway and device), a restart still finds nothing to write, Audit no
// drift, and a route deleted by hand comes back onto its nexthop.
func TestRoutesOnNexthops(t *testing.T) {
	nodes := newCluster(t, 3)
	for _, n := range nodes {
		for _, f := range families {
			n.devs[f.fam] = n.ensure(t, n.cfg(f.fam))
			n.reconcile(t, n.devs[f.fam], peersOf(nodes, n, f.fam))
		}
	}
	a := nodes[0]
	ids := map[string]string{}
	for _, o := range nodes[1:] {
		ids[o.subnet[0].String()] = nexthopRoute(t, a.ns, o.subnet[0].String(), o.subnet[0].Addr().String(), "flannel.1")
	}
	if ids["10.244.2.0/24"] == ids["10.244.3.0/24"] {
		t.Errorf("nexthops %v: want one per peer", ids)
	}
	if out := a.ns.Run(t, "ip", "-6", "route"); strings.Contains(out, "nhid") {
		t.Errorf("IPv6 routes on nexthops:\n%s", out)
	}
	for _, f := range families {
		t.Run(f.name+" ping", func(t *testing.T) { pingAll(t, nodes, f.fam) })
	}

	const compat = "/proc/sys/net/ipv4/nexthop_compat_mode" // read in this, the test's own namespace
	outside, err := os.ReadFile(compat)
	if err != nil {
		t.Skipf("this kernel has no %s: %v", compat, err)
	}
	a.ns.Run(t, "sysctl", "-qw", "net.ipv4.nexthop_compat_mode=0")
	if now, _ := os.ReadFile(compat); string(now) != string(outside) {
		t.Fatalf("setting the sysctl in a namespace changed it outside: %q, was %q", now, outside)
	}
	if out := a.ns.Run(t, "ip", "route", "show", "exact", "10.244.2.0/24"); strings.Contains(out, "via") {
		t.Fatalf("compat mode off, the route dump still names the gateway: %s", out)
	}
	d := a.ensure(t, a.cfg(0)) // a restart: a new socket, dumps again
	if s := a.reconcile(t, d, peersOf(nodes, a, 0)); s.Writes() != 0 {
		t.Errorf("compat mode off, a reconcile with nothing changed: %+v", s)
	}
	a.ns.Do(t, func() error {
		drift, err := auditVXLANDev(Settings{}, AuditConfig{Own: a.subnet[0]}, peersOf(nodes, a, 0))
		if err == nil && len(drift.Missing)+len(drift.Stale) != 0 {
			t.Errorf("compat mode off, Audit: %+v", drift)
		}
		return err
	})
	a.ns.Run(t, "ip", "route", "del", "10.244.2.0/24")
	if s := a.reconcile(t, d, peersOf(nodes, a, 0)); s.Added != 1 || s.Deleted != 0 {
		t.Errorf("compat mode off, a route deleted: %+v, want the route alone back", s)
	}
	if id := nexthopRoute(t, a.ns, "10.244.2.0/24", "10.244.2.0", "flannel.1"); id != ids["10.244.2.0/24"] {
		t.Errorf("the route came back on nexthop %s, not on its own %s", id, ids["10.244.2.0/24"])
	}
	ping(t, a.pod, nodes[1].podIP[0])
}

// TestForeignNexthopsUntouched: nexthops that are not ours (another
// protocol on our device, though with a peer's gateway and a route to the
// peer on it; our protocol on another device; a group) are never used,
// changed or deleted, nor is one that holds the id the kernel would give
// ours next; ours take free ids and go with their peers, except while a
// route we do not manage uses one.
func TestForeignNexthopsUntouched(t *testing.T) {
	n := newCluster(t, 1)[0]
	d := n.ensure(t, n.cfg(0))
	pa := peer("10.244.2.0/24", "192.168.50.2", MACFromID("a"))
	pb := peer("10.244.3.0/24", "192.168.50.3", MACFromID("b"))
	pc := peer("10.244.4.0/24", "192.168.50.4", MACFromID("c"))
	for _, args := range []string{
		"id 1 via 10.244.2.0 dev flannel.1 onlink",
		"id 2 via 10.244.3.0 dev flannel.1 onlink proto static",
		"id 3 via 192.168.50.254 dev eth0 proto 83",
		"id 4 group 1/2 proto 83",
	} {
		n.ns.Run(t, append([]string{"ip", "nexthop", "add"}, strings.Fields(args)...)...)
	}
	n.ns.Run(t, "ip", "route", "add", "10.244.2.0/24", "nhid", "1") // the peer's route, someone else's way

	if s := n.reconcile(t, d, []Peer{pa, pb}); s.Added != 8 || s.Deleted != 0 {
		t.Errorf("first reconcile: %+v, want 8 adds", s)
	}
	ida := nexthopRoute(t, n.ns, "10.244.2.0/24", "10.244.2.0", "flannel.1")
	idb := nexthopRoute(t, n.ns, "10.244.3.0/24", "10.244.3.0", "flannel.1")
	foreign := []string{"1", "2", "3", "4"}
	for _, id := range []string{ida, idb} {
		if slices.Contains(foreign, id) {
			t.Errorf("a route of ours uses the foreign nexthop %s", id)
		}
	}
	// The id the kernel would give next, taken by someone else, with the
	// gateway of the next peer.
	a, _ := strconv.Atoi(ida)
	b, _ := strconv.Atoi(idb)
	next := strconv.Itoa(max(a, b) + 1)
	n.ns.Run(t, "ip", "nexthop", "add", "id", next, "via", "10.244.4.0", "dev", "flannel.1", "onlink")
	foreign = append(foreign, next)
	before := map[string]string{}
	for _, id := range foreign {
		before[id] = n.ns.Run(t, "ip", "nexthop", "show", "id", id)
	}
	n.reconcile(t, d, []Peer{pa, pb, pc})
	idc := nexthopRoute(t, n.ns, "10.244.4.0/24", "10.244.4.0", "flannel.1")
	if slices.Contains(append(foreign, ida, idb), idc) {
		t.Errorf("peer c got nexthop %s, another's", idc)
	}

	// A route in another table on b's nexthop keeps it after b goes.
	n.ns.Run(t, "ip", "route", "add", "10.99.0.0/16", "nhid", idb, "table", "100")
	if s := n.reconcile(t, d, []Peer{pa, pc}); s.Deleted != 3 {
		t.Errorf("b gone while a route of table 100 uses its nexthop: %+v, want route, neighbour, FDB deleted", s)
	}
	has(t, "nexthop of b", n.ns.Run(t, "ip", "nexthop", "show", "id", idb), "via 10.244.3.0 dev flannel.1")
	n.ns.Run(t, "ip", "route", "del", "10.99.0.0/16", "table", "100")
	if s := n.reconcile(t, d, []Peer{pa, pc}); s.Writes() != 1 {
		t.Errorf("b's nexthop unused: %+v, want it deleted", s)
	}

	n.reconcile(t, d, nil)
	for _, id := range foreign {
		if now, _ := n.ns.Try("ip", "nexthop", "show", "id", id); now != before[id] {
			t.Errorf("foreign nexthop %s changed: %q, was %q", id, now, before[id])
		}
	}
	if left := n.ns.Run(t, "ip", "nexthop", "show"); strings.Count(left, "\n") != len(foreign) {
		t.Errorf("nexthops of ours left without peers:\n%s", left)
	}
}

// TestFlannelRoutesTakenOver: the routes a flanneld makes (plain, via the
// peer's subnet address, onlink) are replaced by ours on nexthops, whether
// it ran on the node before us or took the node back since; the nexthops
// it left unused and no peer wants go at the next reconcile.
func TestFlannelRoutesTakenOver(t *testing.T) {
	nodes := newCluster(t, 3)
	for _, n := range nodes[1:] {
		n.devs[0] = n.ensure(t, n.cfg(0))
		n.reconcile(t, n.devs[0], peersOf(nodes, n, 0))
	}
	a := nodes[0]
	flanneld := func(peers []*node) {
		for _, o := range peers {
			sn := o.subnet[0]
			a.ns.Run(t, "ip", "route", "replace", sn.String(), "via", sn.Addr().String(), "dev", "flannel.1", "onlink")
		}
	}
	d := a.ensure(t, a.cfg(0))
	flanneld(nodes[1:]) // flanneld ran here before
	if s := a.reconcile(t, d, peersOf(nodes, a, 0)); s.Added != 8 || s.Deleted != 0 {
		t.Errorf("over flanneld's routes: %+v, want 8 adds (the routes rewritten)", s)
	}
	ids := map[string]string{}
	for _, o := range nodes[1:] {
		sn := o.subnet[0]
		ids[sn.String()] = nexthopRoute(t, a.ns, sn.String(), sn.Addr().String(), "flannel.1")
	}
	ping(t, a.pod, nodes[1].podIP[0])

	// A flanneld takes the node back: its plain routes, our nexthops unused
	// but still wanted by subnetd.
	flanneld(nodes[1:])
	a.ns.Do(t, func() error {
		drift, err := auditVXLANDev(Settings{}, AuditConfig{Own: a.subnet[0]}, peersOf(nodes, a, 0))
		want := []string{"route 10.244.2.0/24 nhid " + ids["10.244.2.0/24"] + " via 10.244.2.0 dev flannel.1 onlink",
			"route 10.244.3.0/24 nhid " + ids["10.244.3.0/24"] + " via 10.244.3.0 dev flannel.1 onlink"}
		if err == nil && (!slices.Equal(texts(drift.Missing), want) || len(drift.Stale) != 0) {
			t.Errorf("flanneld's routes: missing %q, stale %q; want missing %q", texts(drift.Missing), texts(drift.Stale), want)
		}
		return err
	})
	// Node 3 leaves while flanneld runs, which deletes its route; subnetd
	// comes back: its routes onto the nexthops it left, node 3's nexthop,
	// neighbour and FDB entry gone.
	a.ns.Run(t, "ip", "route", "del", nodes[2].subnet[0].String())
	d = a.ensure(t, a.cfg(0))
	if s := a.reconcile(t, d, peersOf(nodes[:2], a, 0)); s.Added != 1 || s.Deleted != 3 {
		t.Errorf("back after flanneld: %+v, want 1 route rewritten, 3 entries of node 3 deleted", s)
	}
	if id := nexthopRoute(t, a.ns, "10.244.2.0/24", "10.244.2.0", "flannel.1"); id != ids["10.244.2.0/24"] {
		t.Errorf("node 2's route went onto nexthop %s, not its own %s", id, ids["10.244.2.0/24"])
	}
	if out := a.ns.Run(t, "ip", "nexthop", "show"); strings.Count(out, "\n") != 1 {
		t.Errorf("nexthops after node 3 left:\n%s", out)
	}
	ping(t, a.pod, nodes[1].podIP[0])
}

// TestPlainRoutesWithoutNexthops: on a kernel without nexthop objects (as
// the probe would find it), peer routes are plain routes and a reconcile
// with nothing changed writes nothing; a kernel with them then moves the
// plain routes onto nexthops.
func TestPlainRoutesWithoutNexthops(t *testing.T) {
	nodes := newCluster(t, 2)
	a, b := nodes[0], nodes[1]
	b.devs[0] = b.ensure(t, b.cfg(0))
	b.reconcile(t, b.devs[0], peersOf(nodes, b, 0))
	d := a.ensure(t, a.cfg(0))
	a.ns.Do(t, func() error {
		k, err := d.kernel()
		if err == nil {
			k.nh = -1 // what nexthops() records for a kernel that refuses the dump
		}
		return err
	})
	for _, want := range []int{3, 0} {
		if s := a.reconcile(t, d, peersOf(nodes, a, 0)); s.Writes() != want {
			t.Errorf("without nexthop objects: %+v, want %d writes", s, want)
		}
	}
	has(t, "routes", a.ns.Run(t, "ip", "route"), "10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 83 onlink")
	if out := a.ns.Run(t, "ip", "nexthop", "show"); out != "" {
		t.Errorf("nexthops made on a kernel without them:\n%s", out)
	}
	ping(t, a.pod, b.podIP[0])

	d = a.ensure(t, a.cfg(0))
	if s := a.reconcile(t, d, peersOf(nodes, a, 0)); s.Added != 2 || s.Deleted != 0 {
		t.Errorf("plain routes on a kernel with nexthops: %+v, want a nexthop and the route rewritten", s)
	}
	nexthopRoute(t, a.ns, "10.244.2.0/24", "10.244.2.0", "flannel.1")
	ping(t, a.pod, b.podIP[0])
}
