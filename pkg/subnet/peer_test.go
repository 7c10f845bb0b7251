package subnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/overlay"
)

func TestCheckPeer(t *testing.T) {
	dual, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`))
	if err != nil {
		t.Fatal(err)
	}
	v4only, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	key := func(k string) Subnets {
		s, err := ParseKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name string
		c    Config
		key  string
		want string // in the error; "" for none
	}{
		{"inside", v4only, "10.244.3.0-24", ""},
		{"a reservation outside SubnetMin..SubnetMax", v4only, "10.244.200.0-24", ""},
		{"the network's first subnet", v4only, "10.244.0.0-24", ""},
		{"dual-stack", dual, "10.244.3.0-24&fd00:10:244:3::-64", ""},
		{"IPv4 half only in a dual-stack network", dual, "10.244.3.0-24", ""},
		{"the underlay's subnet", v4only, "192.168.90.0-24", "outside the network 10.244.0.0/16"},
		{"the default gateway", v4only, "192.168.90.254-32", "outside the network"},
		{"a public range", v4only, "8.8.8.0-24", "outside the network"},
		{"the whole network", v4only, "10.244.0.0-16", "is a /16"},
		{"a network that contains ours", v4only, "10.0.0.0-8", "outside the network"},
		{"a longer subnet", v4only, "10.244.3.128-25", "is a /25, but the network's subnets are /24"},
		{"IPv6 outside", dual, "10.244.3.0-24&fd00:99::-64", "subnet fd00:99::/64 is outside the network fd00:10:244::/56"},
		{"IPv6 of another length", dual, "0.0.0.0-0&fd00:10:244:3::-80", "is a /80"},
		{"IPv6 in an IPv4 network", v4only, "10.244.3.0-24&fd00:10:244:3::-64", "the network has no IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.CheckPeer(key(tt.key))
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("CheckPeer(%s) = %v, want %q", tt.key, err, tt.want)
			}
		})
	}
}

// TestCheckPeerTakesOwnSubnets: every subnet the allocator may hand out is
// one CheckPeer accepts, so that no node skips a lease another node holds.
func TestCheckPeerTakesOwnSubnets(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"10.244.0.0/22","SubnetLen":26,"EnableIPv6":true,"IPv6Network":"fd00::/120","IPv6SubnetLen":124}`))
	if err != nil {
		t.Fatal(err)
	}
	for a := c.SubnetMin; !c.SubnetMax.Less(a); a = nthSubnet(a, c.SubnetLen, 1) {
		s := Subnets{V4: netip.PrefixFrom(a, c.SubnetLen), V6: netip.PrefixFrom(c.IPv6SubnetMin, c.IPv6SubnetLen)}
		if err := c.CheckPeer(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func TestLeasePeers(t *testing.T) {
	vx, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/48"}`))
	if err != nil {
		t.Fatal(err)
	}
	hostGW := vx
	hostGW.Backend = overlay.Settings{Type: overlay.TypeHostGW}
	dual := Subnets{V4: netip.MustParsePrefix("10.244.3.0/24"), V6: netip.MustParsePrefix("fd00:10:0:3::/64")}
	data := func(vni int, mac string) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"VNI":%d,"VtepMAC":%q}`, vni, mac))
	}
	good := Attrs{
		PublicIP: netip.MustParseAddr("192.168.1.3"), PublicIPv6: netip.MustParseAddr("2001:db8::3"), BackendType: "vxlan",
		BackendData: data(1, "6e:54:87:06:70:80"), BackendV6Data: data(1, "6e:54:87:06:70:81"),
	}
	with := func(f func(*Attrs)) Attrs { a := good; f(&a); return a }
	tests := []struct {
		name    string
		c       Config
		s       Subnets
		a       Attrs
		v4, v6  bool
		wantErr string
	}{
		{"dual-stack", vx, dual, good, true, true, ""},
		{"IPv6 only (PublicIP 0.0.0.0)", vx, dual, with(func(a *Attrs) { a.PublicIP = netip.IPv4Unspecified() }), false, true, ""},
		{"host-gw needs no MAC", hostGW, dual, with(func(a *Attrs) { a.BackendType, a.BackendData, a.BackendV6Data = "host-gw", nil, nil }), true, true, ""},
		{"other backend", vx, dual, with(func(a *Attrs) { a.BackendType = "host-gw" }), false, false, `backend "host-gw"`},
		{"other VNI", vx, dual, with(func(a *Attrs) { a.BackendData = data(2, "6e:54:87:06:70:80") }), false, false, "VNI 2"},
		{"bad MAC", vx, dual, with(func(a *Attrs) { a.BackendV6Data = data(1, "6e:54") }), false, false, "IPv6: VtepMAC"},
		{"no public address", vx, dual, with(func(a *Attrs) { a.PublicIP, a.PublicIPv6 = netip.IPv4Unspecified(), netip.Addr{} }), false, false, "no public address"},
		{"subnet outside the network", vx, Subnets{V4: netip.MustParsePrefix("192.168.90.0/24")}, good, false, false, "outside the network 10.244.0.0/16"},
		{"subnet of another length", vx, Subnets{V4: netip.MustParsePrefix("10.244.3.0/25")}, good, false, false, "is a /25"},
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
