package vxlan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/subnet"
)

func TestLeasePeers(t *testing.T) {
	vx, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/48"}`))
	if err != nil {
		t.Fatal(err)
	}
	hostGW := vx
	hostGW.Backend = subnet.Backend{Type: subnet.BackendHostGW}
	dual := subnet.Subnets{V4: netip.MustParsePrefix("10.244.3.0/24"), V6: netip.MustParsePrefix("fd00:10:0:3::/64")}
	data := func(vni int, mac string) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"VNI":%d,"VtepMAC":%q}`, vni, mac))
	}
	good := subnet.Attrs{
		PublicIP: netip.MustParseAddr("192.168.1.3"), PublicIPv6: netip.MustParseAddr("2001:db8::3"), BackendType: "vxlan",
		BackendData: data(1, "6e:54:87:06:70:80"), BackendV6Data: data(1, "6e:54:87:06:70:81"),
	}
	with := func(f func(*subnet.Attrs)) subnet.Attrs { a := good; f(&a); return a }
	tests := []struct {
		name    string
		c       subnet.Config
		s       subnet.Subnets
		a       subnet.Attrs
		v4, v6  bool
		wantErr string
	}{
		{"dual-stack", vx, dual, good, true, true, ""},
		{"IPv6 only (PublicIP 0.0.0.0)", vx, dual, with(func(a *subnet.Attrs) { a.PublicIP = netip.IPv4Unspecified() }), false, true, ""},
		{"host-gw needs no MAC", hostGW, dual, with(func(a *subnet.Attrs) { a.BackendType, a.BackendData, a.BackendV6Data = "host-gw", nil, nil }), true, true, ""},
		{"other backend", vx, dual, with(func(a *subnet.Attrs) { a.BackendType = "host-gw" }), false, false, `backend "host-gw"`},
		{"other VNI", vx, dual, with(func(a *subnet.Attrs) { a.BackendData = data(2, "6e:54:87:06:70:80") }), false, false, "VNI 2"},
		{"bad MAC", vx, dual, with(func(a *subnet.Attrs) { a.BackendV6Data = data(1, "6e:54") }), false, false, "IPv6: VtepMAC"},
		{"no public address", vx, dual, with(func(a *subnet.Attrs) { a.PublicIP, a.PublicIPv6 = netip.IPv4Unspecified(), netip.Addr{} }), false, false, "no public address"},
		{"subnet outside the network", vx, subnet.Subnets{V4: netip.MustParsePrefix("192.168.90.0/24")}, good, false, false, "outside the network 10.244.0.0/16"},
		{"subnet of another length", vx, subnet.Subnets{V4: netip.MustParsePrefix("10.244.3.0/25")}, good, false, false, "is a /25"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v4, v6, err := LeasePeers(tt.c, tt.s, tt.a)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || (v4 != nil) != tt.v4 || (v6 != nil) != tt.v6 {
				t.Fatalf("v4 %v, v6 %v, err %v; want v4 %v, v6 %v", v4, v6, err, tt.v4, tt.v6)
			}
			if v4 != nil && (v4.Subnet != tt.s.V4 || v4.PublicIP != tt.a.PublicIP) {
				t.Errorf("v4 peer %+v", v4)
			}
		})
	}
}
