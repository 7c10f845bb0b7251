package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestAudit: on a node Reconcile programmed, Audit finds nothing; after
// entries are removed, rewritten and left over it names each with the
// command that repairs it, and running those commands leaves no drift.
func TestAudit(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	nodes := newCluster(t, 3)
	n := nodes[0]
	for fam := range 2 {
		n.devs[fam] = n.ensure(t, n.cfg(fam))
		n.reconcile(t, n.devs[fam], peersOf(nodes, n, fam))
	}
	audit := func(fam int) Drift {
		t.Helper()
		var d Drift
		n.ns.Do(t, func() (err error) {
			d, err = auditVXLANDev(Settings{}, AuditConfig{Family: family.Family(fam), Own: n.subnet[fam]}, peersOf(nodes, n, fam))
			return err
		})
		return d
	}
	for fam := range 2 {
		if d := audit(fam); len(d.Missing)+len(d.Stale)+len(d.Skipped) != 0 {
			t.Fatalf("family %d right after Reconcile: %+v", fam, d)
		}
	}

	p2, p3 := nodes[1].peer(0), nodes[2].peer(1)
	nh := nexthopRoute(t, n.ns, "10.244.2.0/24", "10.244.2.0", "flannel.1")
	n.ns.Run(t, "ip", "route", "del", "10.244.2.0/24")
	n.ns.Run(t, "ip", "neigh", "replace", "fd00:244:3::", "lladdr", "02:00:00:00:00:99", "dev", "flannel-v6.1", "nud", "permanent")
	n.ns.Run(t, "ip", "route", "add", "10.244.9.0/24", "via", "10.244.9.0", "dev", "flannel.1", "onlink", "proto", "83")
	n.ns.Run(t, "bridge", "fdb", "append", "02:00:00:00:00:09", "dev", "flannel.1", "dst", "192.168.50.9", "self", "permanent")
	want := [2]struct{ missing, stale []string }{
		{missing: []string{"route 10.244.2.0/24 nhid " + nh + " via 10.244.2.0 dev flannel.1 onlink"},
			stale: []string{"fdb 02:00:00:00:00:09 dev flannel.1 dst 192.168.50.9 self permanent", "route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink"}},
		{missing: []string{"neigh fd00:244:3:: lladdr " + p3.VtepMAC.String() + " dev flannel-v6.1 nud permanent"}},
	}
	for fam := range 2 {
		d := audit(fam)
		if got := texts(d.Missing); !slices.Equal(got, want[fam].missing) {
			t.Errorf("family %d missing %q, want %q", fam, got, want[fam].missing)
		}
		if got := texts(d.Stale); !slices.Equal(got, want[fam].stale) {
			t.Errorf("family %d stale %q, want %q", fam, got, want[fam].stale)
		}
		if len(d.Missing) > 0 && d.Missing[0].Subnet != map[int]netip.Prefix{0: p2.Subnet, 1: p3.Subnet}[fam] {
			t.Errorf("family %d: missing entry names subnet %s", fam, d.Missing[0].Subnet)
		}
		for _, e := range append(d.Missing, d.Stale...) {
			n.ns.Run(t, strings.Fields(e.Fix)...)
		}
	}
	for fam := range 2 {
		if d := audit(fam); len(d.Missing)+len(d.Stale) != 0 {
			t.Errorf("family %d after running the fixes: %+v", fam, d)
		}
	}

	stale := Peer{Subnet: netip.MustParsePrefix("10.244.8.0/24"), PublicIP: n.public[0], VtepMAC: MACFromID("old")}
	n.ns.Do(t, func() error {
		d, err := auditVXLANDev(Settings{}, AuditConfig{Own: n.subnet[0]}, append(peersOf(nodes, n, 0), stale))
		if want := "public IP is this node's own (a stale lease of this node?)"; err != nil || len(d.Skipped) != 1 || d.Skipped[stale.Subnet] != want {
			t.Errorf("a peer at this node's address: %v, skipped %q, want %q", err, d.Skipped, want)
		}
		return nil
	})

	n.ns.Run(t, "ip", "link", "delete", "flannel.1")
	n.ns.Do(t, func() error {
		if _, err := auditVXLANDev(Settings{}, AuditConfig{Own: n.subnet[0]}, nil); !errors.Is(err, ErrNoDevice) {
			t.Errorf("Audit of a missing device: %v", err)
		}
		return nil
	})
}

// TestAuditDirectRouting: with DirectRouting the peers on the underlay's link
// are routed via their public IP, and Audit expects exactly that.
func TestAuditDirectRouting(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	nodes := newCluster(t, 3)
	n := nodes[0]
	cfg := n.cfg(0)
	cfg.DirectRouting = true
	d := n.ensure(t, cfg)
	if s := n.reconcile(t, d, peersOf(nodes, n, 0)); s.Direct != 2 {
		t.Fatalf("reconcile: %+v, want 2 direct peers", s)
	}
	for _, direct := range []bool{true, false} {
		n.ns.Do(t, func() error {
			drift, err := auditVXLANDev(Settings{DirectRouting: direct}, AuditConfig{Own: n.subnet[0]}, peersOf(nodes, n, 0))
			if err != nil {
				return err
			}
			if got := len(drift.Missing) + len(drift.Stale); (got == 0) != direct {
				t.Errorf("Audit with DirectRouting %v: %+v", direct, drift)
			}
			if direct {
				return nil
			}
			for _, want := range []string{"nexthop id 1 via 10.244.2.0 dev flannel.1 onlink", "route 10.244.2.0/24 nhid 1 via 10.244.2.0 dev flannel.1 onlink"} {
				if !slices.Contains(texts(drift.Missing), want) {
					t.Errorf("Audit without DirectRouting misses %q: %q", want, texts(drift.Missing))
				}
			}
			return nil
		})
	}
}

// auditVXLANDev is s's audit as a vxlan backend (VNI 1, flannel.1 and
// flannel-v6.1), checking it names the device it read.
func auditVXLANDev(s Settings, c AuditConfig, peers []Peer) (Drift, error) {
	s.Type = TypeVXLAN
	where, d, err := s.Audit(c, peers)
	if want := DefaultName(DefaultVNI, c.Family); where != want {
		return d, fmt.Errorf("the audit read %q, want %q (%w)", where, want, err)
	}
	return d, err
}

func texts(es []Entry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Kind+" "+e.Text)
	}
	slices.Sort(out)
	return out
}

// TestAuditHostGW: the host-gw backend's routes via the peers' public IPs,
// audited the way HostGW.Reconcile programs them.
func TestAuditHostGW(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	nodes := newCluster(t, 3)
	n := nodes[0]
	hostGW := Settings{Type: TypeHostGW}
	audit := func() (d Drift) {
		t.Helper()
		n.ns.Do(t, func() error {
			where, drift, err := hostGW.Audit(AuditConfig{Own: n.subnet[0], Public: n.public[0]}, peersOf(nodes, n, 0))
			if where != "host-gw via eth0" {
				t.Errorf("host-gw audit read %q, want host-gw via eth0", where)
			}
			d = drift
			return err
		})
		return d
	}
	n.ns.Do(t, func() error {
		if where, _, err := hostGW.Audit(AuditConfig{Own: n.subnet[0]}, nil); where != "host-gw" || !errors.Is(err, ErrNoPublicIP) {
			t.Errorf("host-gw audit without a public IP: %q, %v", where, err)
		}
		return nil
	})
	n.ns.Do(t, func() error {
		_, err := HostGW{Underlay: "eth0", Subnet: n.subnet[0], Log: quiet}.Reconcile(peersOf(nodes, n, 0))
		return err
	})
	if d := audit(); len(d.Missing)+len(d.Stale)+len(d.Skipped) != 0 {
		t.Fatalf("right after Reconcile: %+v", d)
	}
	n.ns.Run(t, "ip", "route", "del", "10.244.2.0/24")
	d := audit()
	if len(d.Missing) != 1 || d.Missing[0].Text != "10.244.2.0/24 via 192.168.50.2" || d.Missing[0].Fix != "ip route replace 10.244.2.0/24 via 192.168.50.2 proto 83" {
		t.Fatalf("route deleted: %+v", d)
	}
	n.ns.Run(t, strings.Fields(d.Missing[0].Fix)...)
	if d := audit(); len(d.Missing)+len(d.Stale) != 0 {
		t.Fatalf("after the fix: %+v", d)
	}
}

// TestAuditNexthopDrift: a nexthop of ours changed by hand to another
// gateway is drift, and so is a route on a nexthop someone turned into
// theirs (another protocol): each named with the command that repairs it,
// in an order the commands work in, leaving the foreign nexthop alone and
// Reconcile nothing to do.
func TestAuditNexthopDrift(t *testing.T) {
	nodes := newCluster(t, 3)
	n := nodes[0]
	n.devs[0] = n.ensure(t, n.cfg(0))
	n.reconcile(t, n.devs[0], peersOf(nodes, n, 0))
	id2 := nexthopRoute(t, n.ns, "10.244.2.0/24", "10.244.2.0", "flannel.1")
	id3 := nexthopRoute(t, n.ns, "10.244.3.0/24", "10.244.3.0", "flannel.1")
	n.ns.Run(t, "ip", "nexthop", "replace", "id", id2, "via", "10.244.9.0", "dev", "flannel.1", "onlink", "proto", "83")
	n.ns.Run(t, "ip", "nexthop", "replace", "id", id3, "via", "10.244.3.0", "dev", "flannel.1", "onlink", "proto", "static")
	foreign := n.ns.Run(t, "ip", "nexthop", "show", "id", id3)

	var d Drift
	n.ns.Do(t, func() (err error) {
		d, err = auditVXLANDev(Settings{}, AuditConfig{Own: n.subnet[0]}, peersOf(nodes, n, 0))
		return err
	})
	a, _ := strconv.Atoi(id2)
	b, _ := strconv.Atoi(id3)
	new2, new3 := strconv.Itoa(max(a, b)+1), strconv.Itoa(max(a, b)+2) // above any id in use
	wantMissing := []string{
		"nexthop id " + new2 + " via 10.244.2.0 dev flannel.1 onlink",
		"nexthop id " + new3 + " via 10.244.3.0 dev flannel.1 onlink",
		"route 10.244.2.0/24 nhid " + new2 + " via 10.244.2.0 dev flannel.1 onlink",
		"route 10.244.3.0/24 nhid " + new3 + " via 10.244.3.0 dev flannel.1 onlink",
	}
	if got := texts(d.Missing); !slices.Equal(got, wantMissing) {
		t.Errorf("missing %q, want %q", got, wantMissing)
	}
	if got, want := texts(d.Stale), []string{"nexthop id " + id2 + " via 10.244.9.0 dev flannel.1"}; !slices.Equal(got, want) {
		t.Errorf("stale %q, want %q", got, want)
	}
	if len(d.Missing) > 1 && (d.Missing[0].Subnet != nodes[1].subnet[0] || d.Missing[0].Fix != "ip nexthop add id "+new2+" via 10.244.2.0 dev flannel.1 onlink proto 83" ||
		d.Missing[1].Fix != "ip route replace 10.244.2.0/24 nhid "+new2+" proto 83") {
		t.Errorf("the first missing entries: %+v", d.Missing[:2])
	}
	for _, e := range append(d.Missing, d.Stale...) {
		n.ns.Run(t, strings.Fields(e.Fix)...)
	}
	if s := n.reconcile(t, n.devs[0], peersOf(nodes, n, 0)); s.Writes() != 0 {
		t.Errorf("reconcile after the fixes: %+v", s)
	}
	if now := n.ns.Run(t, "ip", "nexthop", "show", "id", id3); now != foreign {
		t.Errorf("the foreign nexthop changed: %q, was %q", now, foreign)
	}
	nexthopRoute(t, n.ns, "10.244.2.0/24", "10.244.2.0", "flannel.1")
	nexthopRoute(t, n.ns, "10.244.3.0/24", "10.244.3.0", "flannel.1")
}
