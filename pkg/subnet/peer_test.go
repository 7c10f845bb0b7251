package subnet

import (
	"net/netip"
	"strings"
	"testing"
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
