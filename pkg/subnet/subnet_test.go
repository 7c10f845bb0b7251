package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/overlay"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, in string
		check    func(Config) bool
		wantErr  string
	}{
		{"flannel defaults", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, func(c Config) bool {
			return c.EnableIPv4 && !c.EnableIPv6 && c.SubnetLen == 24 && c.SubnetMin == netip.MustParseAddr("10.244.1.0") &&
				c.SubnetMax == netip.MustParseAddr("10.244.255.0") && c.Backend == overlay.Settings{Type: "vxlan", VNI: 1, Port: 8472}
		}, ""},
		{"no backend means vxlan", `{"Network":"10.244.0.0/16"}`, func(c Config) bool { return c.Backend.Type == overlay.TypeVXLAN }, ""},
		{"small network", `{"Network":"10.0.0.0/26"}`, func(c Config) bool {
			return c.SubnetLen == 28 && c.SubnetMin == netip.MustParseAddr("10.0.0.16") && c.SubnetMax == netip.MustParseAddr("10.0.0.48")
		}, ""},
		{"dual stack", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/48"}`, func(c Config) bool {
			return c.IPv6SubnetLen == 64 && c.IPv6SubnetMin == netip.MustParseAddr("fd00:10:0:1::") && c.IPv6SubnetMax == netip.MustParseAddr("fd00:10:0:ffff::")
		}, ""},
		{"ipv6 only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"host-gw"}}`, func(c Config) bool {
			return !c.EnableIPv4 && c.IPv6SubnetMax == netip.MustParseAddr("fd00:0:0:ff::") && c.Backend.VNI == 0
		}, ""},
		{"explicit range", `{"Network":"10.1.0.0/16","SubnetLen":20,"SubnetMin":"10.1.16.0","SubnetMax":"10.1.48.0","Backend":{"Type":"vxlan","VNI":4096,"Port":4789}}`, func(c Config) bool {
			return c.SubnetLen == 20 && c.Backend.VNI == 4096 && c.Backend.Port == 4789
		}, ""},
		{"bad json", `{"Network":`, nil, "decoding JSON"},
		{"no network", `{}`, nil, "Network is missing"},
		{"host bits", `{"Network":"10.244.0.1/16"}`, nil, "host bits"},
		{"v6 network in Network", `{"Network":"fd00::/48"}`, nil, "wrong family"},
		{"too small", `{"Network":"10.0.0.0/29"}`, nil, "too small"},
		{"subnetlen too long", `{"Network":"10.0.0.0/16","SubnetLen":31}`, nil, "no room"},
		{"too few subnets", `{"Network":"10.0.0.0/16","SubnetLen":17}`, nil, "fewer than four"},
		{"min outside", `{"Network":"10.0.0.0/16","SubnetMin":"10.1.0.0"}`, nil, "outside"},
		{"max off boundary", `{"Network":"10.0.0.0/16","SubnetMax":"10.0.3.1"}`, nil, "boundary"},
		{"min above max", `{"Network":"10.0.0.0/16","SubnetMin":"10.0.9.0","SubnetMax":"10.0.3.0"}`, nil, "above"},
		{"nothing enabled", `{"EnableIPv4":false}`, nil, "both false"},
		{"udp backend", `{"Network":"10.0.0.0/16","Backend":{"Type":"udp"}}`, nil, "not supported"},
		{"vni", `{"Network":"10.0.0.0/16","Backend":{"VNI":16777216}}`, nil, "VNI"},
		{"mtu", `{"Network":"10.0.0.0/16","Backend":{"MTU":100}}`, nil, "MTU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !tt.check(c) {
				t.Fatalf("ParseConfig = %+v, %v", c, err)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	tests := []struct {
		key  string
		want Subnets
	}{
		{"10.244.3.0-24", Subnets{V4: netip.MustParsePrefix("10.244.3.0/24")}},
		{"10.244.3.0-24&fd00:10:0:3::-64", Subnets{V4: netip.MustParsePrefix("10.244.3.0/24"), V6: netip.MustParsePrefix("fd00:10:0:3::/64")}},
		{"0.0.0.0-0&fd00::-64", Subnets{V6: netip.MustParsePrefix("fd00::/64")}},
	}
	for _, tt := range tests {
		got, err := ParseKey(tt.key)
		if err != nil || got != tt.want || got.Key() != tt.key {
			t.Errorf("ParseKey(%q) = %v, %v; Key() = %q", tt.key, got, err, got.Key())
		}
	}
	for _, bad := range []string{"", "10.244.3.0", "10.244.3.1-24", "10.244.3.0-33", "fd00::-64", "10.0.0.0-8&10.0.0.0-8", "0.0.0.0-0", "a-b", "10.0.0.0-24&fe80::%eth0-64"} {
		if s, err := ParseKey(bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseKey(%q) = %v, %v; want ErrBadKey", bad, s, err)
		}
	}
}

func TestAttrsWire(t *testing.T) {
	a := Attrs{PublicIP: netip.MustParseAddr("192.168.0.2"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`), NodeID: "n1"}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"PublicIP":"192.168.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"},"SubnetdNodeID":"n1"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var back Attrs
	if err := json.Unmarshal(b, &back); err != nil || back.PublicIP != a.PublicIP || back.NodeID != "n1" || !bytes.Equal(back.BackendData, a.BackendData) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	// IPv6-only, as flanneld writes it.
	v6 := Attrs{PublicIPv6: netip.MustParseAddr("fd00::2")}
	b, _ = json.Marshal(v6)
	if !strings.Contains(string(b), `"PublicIP":"0.0.0.0","PublicIPv6":"fd00::2"`) {
		t.Fatalf("ipv6-only value %s", b)
	}
	for _, bad := range []string{`{"PublicIP":"fd00::1"}`, `{"PublicIP":"x"}`, `{"PublicIPv6":"10.0.0.1"}`, `[]`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", bad)
		}
	}
}

// TestValueSizeBound: a lease value or network config over MaxValueSize is
// refused with ErrValueTooLarge before it is decoded; one just under is read.
func TestValueSizeBound(t *testing.T) {
	pad := func(n int) string { return strings.Repeat(" ", n) }
	lease := `{"PublicIP":"192.168.0.2","BackendType":"vxlan"}`
	var a Attrs
	if err := json.Unmarshal([]byte(lease+pad(MaxValueSize-len(lease))), &a); err != nil || a.PublicIP.String() != "192.168.0.2" {
		t.Errorf("a lease of MaxValueSize bytes: %+v, %v", a, err)
	}
	huge := `{"PublicIP":"192.168.0.2","BackendData":"` + pad(MaxValueSize) + `"}`
	if err := json.Unmarshal([]byte(huge), &a); !errors.Is(err, ErrValueTooLarge) || !strings.Contains(err.Error(), "delete the key") {
		t.Errorf("a lease over MaxValueSize: %v, want ErrValueTooLarge saying what to do", err)
	}
	config := `{"Network":"10.244.0.0/16"}`
	if _, err := ParseConfig([]byte(config + pad(MaxValueSize-len(config)))); err != nil {
		t.Errorf("a config of MaxValueSize bytes: %v", err)
	}
	if _, err := ParseConfig([]byte(config + pad(MaxValueSize))); !errors.Is(err, ErrValueTooLarge) || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("a config over MaxValueSize: %v, want ErrInvalidConfig and ErrValueTooLarge", err)
	}
}

func TestAddShifted(t *testing.T) {
	tests := []struct {
		in   string
		bits int
		n    uint64
		want string // "" for overflow
	}{
		{"10.244.0.0", 24, 1, "10.244.1.0"},
		{"10.244.255.0", 24, 1, "10.245.0.0"},
		{"10.0.0.0", 28, 17, "10.0.1.16"},
		{"255.255.255.0", 24, 1, ""},
		{"fd00::", 64, 1, "fd00:0:0:1::"},
		{"fd00:0:0:ffff::", 64, 1, "fd00:0:1::"},
		{"fd00::", 125, 3, "fd00::18"},
		{"ffff:ffff:ffff:ffff::", 64, 1, ""},
	}
	for _, tt := range tests {
		got, ok := addShifted(netip.MustParseAddr(tt.in), tt.bits, tt.n)
		if (tt.want == "" && ok) || (tt.want != "" && (!ok || got.String() != tt.want)) {
			t.Errorf("addShifted(%s, /%d, %d) = %v, %v; want %q", tt.in, tt.bits, tt.n, got, ok, tt.want)
		}
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"10.244.3.0-24", "10.244.3.0-24&fd00:10:0:3::-64", "0.0.0.0-0&fd00::-64", "x&y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		s, err := ParseKey(key)
		if err != nil {
			return
		}
		again, err := ParseKey(s.Key())
		if err != nil || again != s {
			t.Fatalf("%q parsed as %v, whose key %q reads back as %v, %v", key, s, s.Key(), again, err)
		}
	})
}

func FuzzAttrs(f *testing.F) {
	f.Add([]byte(`{"PublicIP":"192.168.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}}`))
	f.Add([]byte(`{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::1","SubnetdNodeID":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var a Attrs
		if json.Unmarshal(data, &a) != nil {
			return
		}
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", a, err)
		}
		var back Attrs
		if err := json.Unmarshal(b, &back); err != nil || back.PublicIP != a.PublicIP && !(back.PublicIP.IsUnspecified() && !a.PublicIP.IsValid()) || back.PublicIPv6 != a.PublicIPv6 || back.NodeID != a.NodeID {
			t.Fatalf("%s -> %+v -> %s -> %+v, %v", data, a, b, back, err)
		}
	})
}
