package containerif

import (
	"errors"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/netconf"
)

// TestSysctls: the IPv6 keys of ipam.ConfigureIface (lo too) only with an
// IPv6 address, the DAD choice and arp_notify always, ndisc_notify where
// the plugin asks for it.
func TestSysctls(t *testing.T) {
	v6 := []sysctl{{"net/ipv6/conf/lo/disable_ipv6", "0"}, {"net/ipv6/conf/eth0/disable_ipv6", "0"}, {"net/ipv6/conf/eth0/keep_addr_on_down", "1"}}
	noDAD := []sysctl{{"net/ipv6/conf/eth0/accept_dad", "0"}}
	dad := []sysctl{{"net/ipv6/conf/eth0/enhanced_dad", "1"}, {"net/ipv6/conf/eth0/accept_dad", "1"}}
	arp := sysctl{"net/ipv4/conf/eth0/arp_notify", "1"}
	ndisc := sysctl{"net/ipv6/conf/eth0/ndisc_notify", "1"}
	for _, tc := range []struct {
		name  string
		hasV6 bool
		o     Options
		want  []sysctl
	}{
		{"IPv4 only", false, Options{}, append(slices.Clone(noDAD), arp)},
		{"IPv4 only, DAD and ndisc_notify", false, Options{DAD: true, NDiscNotify: true}, append(slices.Clone(dad), arp, ndisc)},
		{"with IPv6", true, Options{}, slices.Concat(v6, noDAD, []sysctl{arp})},
		{"with IPv6, DAD and ndisc_notify", true, Options{DAD: true, NDiscNotify: true}, slices.Concat(v6, dad, []sysctl{arp, ndisc})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sysctls("eth0", tc.hasV6, tc.o); !slices.Equal(got, tc.want) {
				t.Errorf("sysctls = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDNS(t *testing.T) {
	ipam := types.DNS{Nameservers: []string{"10.0.0.53"}}
	for _, tc := range []struct {
		name string
		conf types.DNS
		want types.DNS
	}{
		{"none configured: IPAM's", types.DNS{}, ipam},
		{"nameservers", types.DNS{Nameservers: []string{"10.1.0.53"}}, types.DNS{Nameservers: []string{"10.1.0.53"}}},
		{"search only", types.DNS{Search: []string{"pods"}}, types.DNS{Search: []string{"pods"}}},
		{"options only", types.DNS{Options: []string{"ndots:2"}}, types.DNS{Options: []string{"ndots:2"}}},
		{"domain only", types.DNS{Domain: "pods"}, types.DNS{Domain: "pods"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DNS(tc.conf, ipam)
			if !slices.Equal(got.Nameservers, tc.want.Nameservers) || !slices.Equal(got.Search, tc.want.Search) ||
				!slices.Equal(got.Options, tc.want.Options) || got.Domain != tc.want.Domain {
				t.Errorf("DNS = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestIPAMIndependent(t *testing.T) {
	for typ, want := range map[string]bool{"host-local": true, "static": true, "dhcp": false, "whereabouts": false} {
		if got := ipamIndependent(typ); got != want {
			t.Errorf("ipamIndependent(%q) = %v, want %v", typ, got, want)
		}
	}
}

// macConf is a plugin configuration with MACArgs embedded and a "mac" key.
type macConf struct {
	netconf.Base
	MACArgs
	Mac string `json:"mac"`
}

// TestPickMAC: the keys decode through the embedding, the precedence is
// runtimeConfig, args.cni, CNI_ARGS, "mac", and a bad value names its
// source with code 7, or 4 from CNI_ARGS.
func TestPickMAC(t *testing.T) {
	const base = `"cniVersion":"1.1.0","name":"n","type":"t"`
	rc, args, key := `"runtimeConfig":{"mac":"02:00:00:00:00:03"}`, `"args":{"cni":{"mac":"02:00:00:00:00:02"}}`, `"mac":"02:00:00:00:00:04"`
	for _, tc := range []struct {
		name, conf, cniArgs string
		want                string // "" for none
		code                uint   // 0: no error
	}{
		{"none", `{` + base + `}`, "K8S_POD_NAME=x", "", 0},
		{"all: runtimeConfig", `{` + base + `,` + rc + `,` + args + `,` + key + `}`, "MAC=02:00:00:00:00:01", "02:00:00:00:00:03", 0},
		{"args.cni over CNI_ARGS", `{` + base + `,` + args + `,` + key + `}`, "MAC=02:00:00:00:00:01", "02:00:00:00:00:02", 0},
		{"CNI_ARGS over the key", `{` + base + `,` + key + `}`, "MAC=02:00:00:00:00:01", "02:00:00:00:00:01", 0},
		{"the key", `{` + base + `,` + key + `}`, "", "02:00:00:00:00:04", 0},
		{"multicast in runtimeConfig", `{` + base + `,"runtimeConfig":{"mac":"01:00:5e:00:00:01"}}`, "", "", netconf.CodeInvalidConfig},
		{"bad CNI_ARGS MAC", `{` + base + `}`, "MAC=zz", "", netconf.CodeInvalidEnv},
		{"malformed CNI_ARGS", `{` + base + `}`, "novalue", "", netconf.CodeInvalidEnv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &macConf{}
			if err := netconf.Load([]byte(tc.conf), c); err != nil {
				t.Fatal(err)
			}
			mac, err := c.PickMAC(tc.cniArgs, c.Mac)
			var ne *netconf.Error
			switch {
			case tc.code != 0 && (!errors.As(err, &ne) || ne.Code != tc.code):
				t.Errorf("PickMAC error %v, want code %d", err, tc.code)
			case tc.code == 0 && err != nil:
				t.Errorf("PickMAC: %v", err)
			case tc.code == 0 && tc.want == "" && mac != nil:
				t.Errorf("PickMAC = %v, want none", mac)
			case tc.want != "" && mac.String() != tc.want:
				t.Errorf("PickMAC = %v, want %s", mac, tc.want)
			}
		})
	}
}
