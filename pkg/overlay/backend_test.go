package overlay

import (
	"slices"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
)

// TestNew: the backend type is looked up in one place, which fills in
// flannel's defaults and refuses a type or vxlan setting it cannot serve.
func TestNew(t *testing.T) {
	node := Node{Underlay: "eth0", MTU: 1500, ID: "node-a"}
	tests := []struct {
		name    string
		s       Settings
		devices []string
		vtep    bool
		str     string // what reports call it, defaults filled in
		wantErr string
	}{
		{"no type means vxlan", Settings{}, []string{"flannel.1", "flannel-v6.1"}, true, "vxlan VNI 1 port 8472", ""},
		{"vxlan VNI", Settings{Type: "vxlan", VNI: 42}, []string{"flannel.42", "flannel-v6.42"}, true, "vxlan VNI 42 port 8472", ""},
		{"host-gw", Settings{Type: "host-gw"}, nil, false, "host-gw", ""},
		{"udp", Settings{Type: "udp"}, nil, false, "", `Backend.Type "udp" is not supported; use "vxlan" or "host-gw"`},
		{"VNI range", Settings{Type: "vxlan", VNI: 1 << 24}, nil, false, "", "Backend.VNI 16777216 is out of range"},
		{"MTU", Settings{MTU: 100}, nil, false, "", "Backend.MTU 100 is too small"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.s, node)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New = %v, want an error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(b.Devices(), tt.devices) {
				t.Errorf("devices %q, want %q", b.Devices(), tt.devices)
			}
			s, _ := tt.s.WithDefaults()
			if s.UsesVTEP() != tt.vtep || (b.VtepMAC(family.IPv4) != nil) != tt.vtep || (b.VtepMAC(family.IPv6) != nil) != tt.vtep {
				t.Errorf("UsesVTEP %v, VTEP MACs %s and %s; want VTEPs: %v", s.UsesVTEP(), b.VtepMAC(family.IPv4), b.VtepMAC(family.IPv6), tt.vtep)
			}
			if s.String() != tt.str {
				t.Errorf("String %q, want %q", s.String(), tt.str)
			}
		})
	}
	// The VTEP MACs are those subnetd has always published for a node.
	b, _ := New(Settings{}, node)
	if b.VtepMAC(family.IPv4).String() != MACFromID("node-a/ipv4").String() || b.VtepMAC(family.IPv6).String() != MACFromID("node-a/ipv6").String() {
		t.Errorf("VTEP MACs %s, %s: not derived from the node's identity per family", b.VtepMAC(family.IPv4), b.VtepMAC(family.IPv6))
	}
}

// TestBackends: three dual-stack nodes, each with the backend New chose,
// programmed through the interface alone: pods reach each other in both
// families, a vanished peer is removed by Update, and Teardown leaves no
// device or route of ours.
func TestBackends(t *testing.T) {
	for _, tc := range []struct {
		typ string
		mtu int
	}{{TypeVXLAN, 1430}, {TypeHostGW, 1500}} {
		t.Run(tc.typ, func(t *testing.T) {
			nodes := newCluster(t, 3)
			backends := make([]Backend, len(nodes))
			for i, n := range nodes {
				b, err := New(Settings{Type: tc.typ}, Node{Underlay: "eth0", MTU: 1500, Public: n.public, ID: n.ns.Name, Log: quiet})
				if err != nil {
					t.Fatal(err)
				}
				backends[i] = b
				var mtu int
				n.ns.Do(t, func() (err error) { mtu, err = b.Ensure(n.subnet); return err })
				if mtu != tc.mtu {
					t.Errorf("pod MTU %d, want %d", mtu, tc.mtu)
				}
			}
			peersOf := func(self int, nodes []*node) ByFamily[[]Peer] {
				var ps ByFamily[[]Peer]
				for i, o := range nodes {
					for f := range ps {
						if i != self {
							ps[f] = append(ps[f], Peer{Subnet: o.subnet[f], PublicIP: o.public[f], VtepMAC: backends[i].VtepMAC(family.Family(f))})
						}
					}
				}
				return ps
			}
			for i, n := range nodes {
				var s Stats
				n.ns.Do(t, func() (err error) { s, err = backends[i].Reconcile(peersOf(i, nodes)); return err })
				if s.Peers != 4 || s.Skipped != 0 {
					t.Errorf("node %d: %+v, want 2 peers per family", i, s)
				}
			}
			for _, f := range families {
				t.Run(f.name+" ping", func(t *testing.T) { pingAll(t, nodes, f.fam) })
			}

			a := nodes[0]
			var s Stats
			a.ns.Do(t, func() (err error) { s, err = backends[0].Update(peersOf(0, nodes[:2])); return err })
			if s.Peers != 2 || s.Deleted == 0 || strings.Contains(a.ns.Run(t, "ip", "route"), "10.244.3.0") {
				t.Errorf("a vanished peer: %+v", s)
			}
			a.ns.Do(t, func() error { return backends[0].Teardown() })
			if out := a.ns.Run(t, "ip", "-o", "link"); strings.Contains(out, "flannel") {
				t.Errorf("a device survived Teardown:\n%s", out)
			}
			for _, v := range []string{"-4", "-6"} {
				if out := a.ns.Run(t, "ip", v, "route"); strings.Contains(out, "proto 83") {
					t.Errorf("routes survived Teardown:\n%s", out)
				}
			}
		})
	}
}
