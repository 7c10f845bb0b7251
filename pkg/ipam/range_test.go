package ipam

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/netconf"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestRangeConfigParse(t *testing.T) {
	tests := []struct {
		name    string
		in      RangeConfig
		want    string // "start-end gw", or an error substring after "ERR "
		wantErr string
	}{
		{name: "v4 defaults", in: RangeConfig{Subnet: "10.1.2.0/24"}, want: "10.1.2.1-10.1.2.254 10.1.2.1"},
		{name: "v6 defaults", in: RangeConfig{Subnet: "fd00::/120"}, want: "fd00::1-fd00::ff fd00::1"},
		{name: "v4 /30", in: RangeConfig{Subnet: "10.0.0.4/30"}, want: "10.0.0.5-10.0.0.6 10.0.0.5"},
		{name: "v4 /9 end", in: RangeConfig{Subnet: "10.0.0.0/9"}, want: "10.0.0.1-10.127.255.254 10.0.0.1"},
		{name: "explicit", in: RangeConfig{Subnet: "10.10.0.0/16", RangeStart: "10.10.1.20", RangeEnd: "10.10.3.50", Gateway: "10.10.0.254"}, want: "10.10.1.20-10.10.3.50 10.10.0.254"},
		{name: "spaces", in: RangeConfig{Subnet: " 10.1.2.0/24 ", RangeStart: " 10.1.2.9"}, want: "10.1.2.9-10.1.2.254 10.1.2.1"},
		{name: "bad cidr", in: RangeConfig{Subnet: "10.1.2.0"}, wantErr: "is not a CIDR"},
		{name: "empty subnet", in: RangeConfig{}, wantErr: "is not a CIDR"},
		{name: "host bits", in: RangeConfig{Subnet: "10.1.2.3/24"}, wantErr: "network address for /24 is 10.1.2.0"},
		{name: "too small v4", in: RangeConfig{Subnet: "10.1.2.0/31"}, wantErr: "too small"},
		{name: "too small v6", in: RangeConfig{Subnet: "fd00::/127"}, wantErr: "too small"},
		{name: "gateway outside", in: RangeConfig{Subnet: "10.1.2.0/24", Gateway: "10.1.3.1"}, wantErr: "gateway 10.1.3.1 is outside subnet 10.1.2.0/24"},
		{name: "start outside", in: RangeConfig{Subnet: "10.1.2.0/24", RangeStart: "10.1.1.1"}, wantErr: "rangeStart 10.1.1.1 is outside"},
		{name: "end outside", in: RangeConfig{Subnet: "10.1.2.0/24", RangeEnd: "fd00::1"}, wantErr: "rangeEnd fd00::1 is outside"},
		{name: "reversed", in: RangeConfig{Subnet: "10.1.2.0/24", RangeStart: "10.1.2.50", RangeEnd: "10.1.2.10"}, wantErr: "swap them"},
		{name: "bad start", in: RangeConfig{Subnet: "10.1.2.0/24", RangeStart: "10.1.2"}, wantErr: "not an IP address"},
		{name: "zone", in: RangeConfig{Subnet: "fe80::/64", Gateway: "fe80::1%eth0"}, wantErr: "has a zone"},
		{name: "mapped subnet", in: RangeConfig{Subnet: "::ffff:10.0.0.0/120"}, wantErr: "is not a CIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.in.Parse()
			if tt.wantErr != "" {
				var ne *netconf.Error
				if !errors.As(err, &ne) || ne.Code != netconf.CodeInvalidConfig || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want code 7 containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.String() + " " + r.Gateway.String(); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseRangeSets(t *testing.T) {
	v4 := func(subnet, start, end string) RangeConfig {
		return RangeConfig{Subnet: subnet, RangeStart: start, RangeEnd: end}
	}
	tests := []struct {
		name    string
		in      [][]RangeConfig
		wantErr string
	}{
		{name: "dual stack", in: [][]RangeConfig{{v4("10.1.0.0/24", "", "")}, {{Subnet: "fd00::/64"}}}},
		{name: "two subnets in a set", in: [][]RangeConfig{{v4("10.1.0.0/24", "", ""), v4("10.2.0.0/24", "", "")}}},
		{name: "split subnet", in: [][]RangeConfig{{v4("10.1.0.0/24", "10.1.0.10", "10.1.0.20"), v4("10.1.0.0/24", "10.1.0.21", "10.1.0.30")}}},
		{name: "none", in: nil, wantErr: "no IP ranges specified"},
		{name: "empty set", in: [][]RangeConfig{{}}, wantErr: "range set 0 is empty"},
		{name: "bad range names position", in: [][]RangeConfig{{v4("10.1.0.0/24", "", "")}, {v4("10.2.0.0/24", "", ""), {Subnet: "x"}}}, wantErr: "range set 1, range 1: subnet \"x\""},
		{name: "mixed families", in: [][]RangeConfig{{v4("10.1.0.0/24", "", ""), {Subnet: "fd00::/64"}}}, wantErr: "mixes IPv4 and IPv6"},
		{name: "overlap within", in: [][]RangeConfig{{v4("10.1.0.0/24", "10.1.0.10", "10.1.0.20"), v4("10.1.0.0/24", "10.1.0.20", "10.1.0.30")}}, wantErr: "range set 0: ranges 10.1.0.10-10.1.0.20 and 10.1.0.20-10.1.0.30 overlap"},
		{name: "nested within", in: [][]RangeConfig{{v4("10.1.0.0/16", "", ""), v4("10.1.2.0/24", "", "")}}, wantErr: "overlap"},
		{name: "overlap across", in: [][]RangeConfig{{v4("10.1.0.0/24", "", "")}, {v4("10.1.0.0/25", "", "")}}, wantErr: "range set 0 (10.1.0.1-10.1.0.254) overlaps range set 1 (10.1.0.1-10.1.0.126)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sets, err := ParseRangeSets(tt.in)
			if tt.wantErr == "" {
				if err != nil || len(sets) != len(tt.in) {
					t.Fatalf("got %v, %v", sets, err)
				}
				return
			}
			var ne *netconf.Error
			if !errors.As(err, &ne) || ne.Code != netconf.CodeInvalidConfig || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want code 7 containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRangeSize(t *testing.T) {
	tests := []struct {
		in   RangeConfig
		want uint64
	}{
		{RangeConfig{Subnet: "10.0.0.0/24"}, 253}, // .1-.254 minus the gateway
		{RangeConfig{Subnet: "10.0.0.0/24", Gateway: "10.0.0.254", RangeEnd: "10.0.0.9"}, 9},
		{RangeConfig{Subnet: "fd00::/64"}, ^uint64(0)}, // saturated: never fills up
		{RangeConfig{Subnet: "fd00::/48"}, ^uint64(0)},
		{RangeConfig{Subnet: "fd00::/120", RangeStart: "fd00::1", RangeEnd: "fd00::1"}, 0},
	}
	for _, tt := range tests {
		r, err := tt.in.Parse()
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Size(); got != tt.want {
			t.Errorf("%+v: Size = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestSub128Borrow(t *testing.T) {
	got := sub128(mustAddr("fd00:0:0:1::5"), mustAddr("fd00::ffff:ffff:ffff:ffff"))
	if got != 6 {
		t.Fatalf("sub128 across a 64-bit boundary = %d, want 6", got)
	}
}

func FuzzRangeConfigParse(f *testing.F) {
	f.Add("10.1.2.0/24", "10.1.2.10", "10.1.2.20", "10.1.2.1")
	f.Add("fd00::/64", "", "fd00::ffff", "")
	f.Add("10.1.2.3/24", "x", "", "::1")
	f.Fuzz(func(t *testing.T, subnet, start, end, gw string) {
		r, err := RangeConfig{Subnet: subnet, RangeStart: start, RangeEnd: end, Gateway: gw}.Parse()
		if err != nil {
			return
		}
		if !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || !r.Subnet.Contains(r.Gateway) || r.Start.Compare(r.End) > 0 {
			t.Fatalf("accepted an inconsistent range %+v", r)
		}
		_ = r.Size()
	})
}
