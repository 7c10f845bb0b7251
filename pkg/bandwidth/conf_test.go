package bandwidth

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
)

// TestLoadConf: where each group of keys is taken from, and the subnets.
func TestLoadConf(t *testing.T) {
	rt := `"runtimeConfig":{"bandwidth":{"ingressRate":8000,"ingressBurst":16000,"egressRate":24000,"egressBurst":32000,"shapedSubnets":["10.1.0.0/16"]}}`
	tests := []struct {
		name            string
		keys            string
		ingress, egress direction
		scope           scope
		subnets         []string
	}{
		{"nothing", ``, direction{}, direction{}, shapeAll, nil},
		{"top level", `"ingressRate":1000,"ingressBurst":2000`, direction{1000, 2000}, direction{}, shapeAll, nil},
		{"runtimeConfig", rt, direction{8000, 16000}, direction{24000, 32000}, shapeListed, []string{"10.1.0.0/16"}},
		// The reference's rule: any top-level limit key takes the four
		// from the top level, none from runtimeConfig.
		{"top-level limits win whole", `"egressRate":800,"egressBurst":900,` + rt, direction{}, direction{800, 900}, shapeListed, []string{"10.1.0.0/16"}},
		{"top-level subnets with runtime limits", `"unshapedSubnets":["10.2.0.0/16","fd00::1/64"],` + rt,
			direction{8000, 16000}, direction{24000, 32000}, shapeAllButListed, []string{"10.2.0.0/16", "fd00::/64"}},
		{"empty lists shape everything", `"shapedSubnets":[],"unshapedSubnets":[],` + rt, direction{8000, 16000}, direction{24000, 32000}, shapeAll, nil},
		{"a zero pair is unset", `"ingressRate":0,"ingressBurst":0,"egressRate":8,"egressBurst":8`, direction{}, direction{8, 8}, shapeAll, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConf([]byte(`{"cniVersion":"1.1.0","name":"n","type":"bandwidth"` + prefixComma(tt.keys) + `}`))
			if err != nil {
				t.Fatal(err)
			}
			var subnets []string
			for _, p := range c.subnets {
				subnets = append(subnets, p.String())
			}
			if c.ingress != tt.ingress || c.egress != tt.egress || c.scope != tt.scope || !slices.Equal(subnets, tt.subnets) {
				t.Errorf("got ingress %v egress %v scope %v subnets %v, want %v %v %v %v",
					c.ingress, c.egress, c.scope, subnets, tt.ingress, tt.egress, tt.scope, tt.subnets)
			}
		})
	}
}

func prefixComma(s string) string {
	if s == "" {
		return ""
	}
	return "," + s
}

// TestLoadConfErrors: bad configurations, with the CNI code each gets.
func TestLoadConfErrors(t *testing.T) {
	for _, tt := range badConfs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConf([]byte(tt.conf))
			var ne *netconf.Error
			if !errors.As(err, &ne) || ne.Code != tt.code {
				t.Fatalf("got %v, want code %d", err, tt.code)
			}
			t.Log(err)
		})
	}
}

// badConfs are refused before anything is changed; the privileged tests
// run them through every verb.
var badConfs = []struct {
	name, conf string
	code       uint
	delToo     bool // DEL and GC, which read only the name, refuse it too
}{
	{"not JSON", `{"cniVersion":"1.1.0",`, netconf.CodeDecoding, true},
	{"rate as a string", bw(`"ingressRate":"10M","ingressBurst":1000`), netconf.CodeDecoding, false},
	{"negative rate", bw(`"egressRate":-1,"egressBurst":1000`), netconf.CodeDecoding, false},
	{"subnets not a list", bw(`"shapedSubnets":"10.0.0.0/8"`), netconf.CodeDecoding, false},
	{"no name", `{"cniVersion":"1.1.0","type":"bandwidth","ingressRate":8000,"ingressBurst":8000}`, netconf.CodeInvalidConfig, true},
	{"name not a string", `{"cniVersion":"1.1.0","name":5,"type":"bandwidth"}`, netconf.CodeDecoding, true},
	{"ingress rate without burst", bw(`"ingressRate":8000`), netconf.CodeInvalidConfig, false},
	{"ingress burst without rate", bw(`"ingressBurst":8000`), netconf.CodeInvalidConfig, false},
	{"egress rate without burst", bw(`"egressRate":8000,"egressBurst":0`), netconf.CodeInvalidConfig, false},
	{"egress burst without rate", bw(`"egressBurst":8000`), netconf.CodeInvalidConfig, false},
	{"runtime rate without burst", bw(`"runtimeConfig":{"bandwidth":{"egressRate":8000}}`), netconf.CodeInvalidConfig, false},
	{"rate below a byte", bw(`"ingressRate":7,"ingressBurst":8000`), netconf.CodeInvalidConfig, false},
	{"burst of 4 GB", bw(fmt.Sprintf(`"egressRate":8000,"egressBurst":%d`, uint64(maxBurst))), netconf.CodeInvalidConfig, false},
	{"both subnet lists", bw(`"shapedSubnets":["10.0.0.0/8"],"unshapedSubnets":["10.1.0.0/16"]`), netconf.CodeInvalidConfig, false},
	{"not a CIDR", bw(`"unshapedSubnets":["10.0.0.0/8","10.1.0.0"]`), netconf.CodeInvalidConfig, false},
	{"zone", bw(`"shapedSubnets":["fe80::%eth0/64"]`), netconf.CodeInvalidConfig, false},
	{"IPv4-mapped", bw(`"shapedSubnets":["::ffff:10.0.0.0/104"]`), netconf.CodeInvalidConfig, false},
}

// bw is a configuration with keys; limits unless keys set them.
func bw(keys string) string {
	return `{"cniVersion":"1.1.0","name":"n","type":"bandwidth",` + keys + `}`
}

// TestIfbName: the reference's name, "bwp" and 12 hex digits of
// sha512(network+containerID) (here from sha512sum).
func TestIfbName(t *testing.T) {
	if got := ifbName("cbr0", "abc123"); got != "bwp3e9a3d0f9583" {
		t.Fatalf("ifbName = %q, want bwp3e9a3d0f9583", got)
	}
}

// TestOfNetwork: an ifb is ours for a network when its alias names the
// attachment its name derives from, or, without an alias, when its MAC
// carries the network's tag.
func TestOfNetwork(t *testing.T) {
	ifb := func(name, alias string, mac net.HardwareAddr) netlink.Link {
		return &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name, Alias: alias, HardwareAddr: mac}}
	}
	name, random := ifbName("net 1", "c1"), net.HardwareAddr{0x2a, 1, 2, 3, 4, 5}
	tests := []struct {
		l  netlink.Link
		ok bool
	}{
		{ifb(name, ifbAlias("net 1", "c1"), random), true},
		{ifb(name, "", ifbMAC("net 1")), true},                  // an ADD killed before the alias
		{ifb("bwp0123456789ab", "", ifbMAC("net 1")), true},     // whatever its name
		{ifb(name, "", random), false},                          // the reference's
		{ifb(name, "", ifbMAC("net 2")), false},                 // another network's
		{ifb(name, ifbAlias("net 1", "c2"), random), false},     // forged or stale alias
		{ifb(name, ifbAlias("net 1", "c")[:40], random), false}, // truncated
		{ifb(name, ifbAlias("net 2", "c1"), random), false},
		{&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Alias: ifbAlias("net 1", "c1")}}, false},
		{&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: ifbMAC("net 1")}}, false},
	}
	for i, tt := range tests {
		if ok := ofNetwork(tt.l, "net 1"); ok != tt.ok {
			t.Errorf("%d: ofNetwork(%s alias %q mac %s) = %v, want %v", i, tt.l.Attrs().Name, tt.l.Attrs().Alias, tt.l.Attrs().HardwareAddr, ok, tt.ok)
		}
	}
	if a := ifbMAC("net 1"); a[0]&3 != 2 || !bytes.HasPrefix(a, macPrefix("net 1")) {
		t.Errorf("ifbMAC: %s: want a unicast, locally administered MAC with the network's tag", a)
	}
}

// TestBuckets: the reference's arithmetic (figures from its formulas), and
// where it overflows, ours saturating while ref keeps the reference's
// (Go's conversions on amd64 wrap).
func TestBuckets(t *testing.T) {
	if tick := netlink.TickInUsec(); tick != 15.625 {
		t.Skipf("the figures below are for 15.625 ticks per µs (/proc/net/psched), this kernel has %v", tick)
	}
	ours, ref := buckets(direction{10_000_000, 512_000})
	if want := (bucket{1_250_000, 800_000, 95_250}); ours != want || ref != want {
		t.Errorf("10 Mbit/s, 512 kbit: ours %+v, reference %+v, want %+v", ours, ref, want)
	}
	// containerd's burst (math.MaxUint32 bits) at 10 Mbit/s: 429 s of
	// burst, whose ticks overflow 32 bits.
	ours, ref = buckets(direction{10_000_000, 4294967295})
	if want := (bucket{1_250_000, 4294967295, 536_902_161}); ours != want {
		t.Errorf("ours %+v, want %+v", ours, want)
	}
	if want := (bucket{1_250_000, 2415919079, 536_902_161}); ref != want {
		t.Errorf("reference %+v, want %+v", ref, want)
	}
	// CRI-O's burst (4 GB less a bit): the queue's 32 bits overflow too.
	ours, ref = buckets(direction{10_000_000, 8*math.MaxUint32 - 1})
	if want := (bucket{1_250_000, math.MaxUint32, math.MaxUint32}); ours != want {
		t.Errorf("ours %+v, want %+v", ours, want)
	}
	if want := (bucket{1_250_000, 2147483619, 31248}); ref != want {
		t.Errorf("reference %+v, want %+v", ref, want)
	}
}

// TestU32Keys: a subnet's words, as tc's "match ip src/dst" makes them
// (offsets in the IP header).
func TestU32Keys(t *testing.T) {
	tests := []struct {
		prefix string
		remote end
		want   []netlink.TcU32Key
	}{
		{"10.0.0.0/8", dst, []netlink.TcU32Key{{Mask: 0xff000000, Val: 0x0a000000, Off: 16}}},
		{"10.1.2.3/32", src, []netlink.TcU32Key{{Mask: 0xffffffff, Val: 0x0a010203, Off: 12}}},
		{"0.0.0.0/0", src, nil},
		{"fd00:db8:abcd:1234:e000::/68", dst, []netlink.TcU32Key{
			{Mask: 0xffffffff, Val: 0xfd000db8, Off: 24}, {Mask: 0xffffffff, Val: 0xabcd1234, Off: 28}, {Mask: 0xf0000000, Val: 0xe0000000, Off: 32}}},
		{"fd00::/8", src, []netlink.TcU32Key{{Mask: 0xff000000, Val: 0xfd000000, Off: 8}}},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.prefix)
		got := u32Keys(p, addrOffset[tt.remote][family.OfPrefix(p)])
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: %+v, want %+v", tt.prefix, got, tt.want)
		}
	}
}
