package static

import (
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/netconf"
)

// netConf is the whole network configuration: an IPAM plugin receives its
// caller's, and reads its own section plus the runtime's keys.
type netConf struct {
	netconf.Base
	// Shadows Base.IPAM (a shallower field wins in encoding/json).
	IPAM          *ipamConf `json:"ipam"`
	RuntimeConfig struct {
		IPs []string `json:"ips,omitempty"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			IPs []string `json:"ips,omitempty"`
		} `json:"cni"`
	} `json:"args"`

	addrs  []address
	routes []*types.Route
}

// ipamConf holds the keys of the reference static plugin.
type ipamConf struct {
	Type      string             `json:"type"`
	Addresses []addressConf      `json:"addresses,omitempty"`
	Routes    []ipam.RouteConfig `json:"routes,omitempty"`
	DNS       types.DNS          `json:"dns"`
}

type addressConf struct {
	Address string `json:"address"`
	Gateway string `json:"gateway,omitempty"`
}

// address is one address to hand out: the prefix keeps the host bits.
type address struct {
	prefix netip.Prefix
	gw     netip.Addr
}

// load reads the configuration and decides the addresses, in the
// reference's precedence: the configured ones plus CNI_ARGS IP (GATEWAY
// setting the gateway of those that contain it), replaced by args.cni.ips,
// replaced in turn by runtimeConfig.ips.
func load(stdin []byte, cniArgs string) (*netConf, error) {
	c := &netConf{}
	if err := netconf.Load(stdin, c); err != nil {
		return nil, err
	}
	if c.IPAM == nil {
		return nil, netconf.Required(`"ipam"`, `the static plugin reads its addresses there, e.g. "ipam": {"type": "static", "addresses": [{"address": "10.10.0.5/24"}]}`)
	}
	var err error
	if c.routes, err = ipam.Routes("ipam.routes", c.IPAM.Routes); err != nil {
		return nil, err
	}
	if c.addrs, err = configured(c.IPAM.Addresses); err != nil {
		return nil, err
	}
	if err := c.fromCNIArgs(cniArgs); err != nil {
		return nil, err
	}
	for _, src := range []struct {
		key  string
		list []string
	}{{"args.cni.ips", c.Args.CNI.IPs}, {"runtimeConfig.ips", c.RuntimeConfig.IPs}} {
		if len(src.list) == 0 {
			continue
		}
		if c.addrs, err = prefixes(src.key, netconf.CodeInvalidConfig, src.list); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func configured(list []addressConf) ([]address, error) {
	out := make([]address, 0, len(list))
	for i, a := range list {
		p, err := parsePrefix(a.Address)
		if err != nil {
			return nil, netconf.Invalid("ipam.addresses[%d].address %q is not an address in CIDR notation; write e.g. 10.10.0.5/24 or fd00::5/64", i, a.Address)
		}
		addr := address{prefix: p}
		if a.Gateway != "" {
			if addr.gw, err = netip.ParseAddr(a.Gateway); err != nil || family.Of(addr.gw) != family.OfPrefix(p) {
				return nil, netconf.Invalid("ipam.addresses[%d].gateway %q is not an address of the same family as %s; write e.g. 10.10.0.1", i, a.Gateway, p)
			}
		}
		out = append(out, addr)
	}
	return out, nil
}

// fromCNIArgs adds CNI_ARGS IP's addresses and sets GATEWAY's gateways.
func (c *netConf) fromCNIArgs(cniArgs string) error {
	args, err := netconf.ParseArgs(cniArgs)
	if err != nil {
		return err
	}
	if v := args["IP"]; v != "" {
		more, err := prefixes("CNI_ARGS IP", netconf.CodeInvalidEnv, strings.Split(v, ","))
		if err != nil {
			return err
		}
		c.addrs = append(c.addrs, more...)
	}
	if v := args["GATEWAY"]; v != "" {
		for s := range strings.SplitSeq(v, ",") {
			gw, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return netconf.Errorf(netconf.CodeInvalidEnv, "CNI_ARGS GATEWAY: %q is not an IP address; write e.g. 10.10.0.1", s)
			}
			for i := range c.addrs {
				if c.addrs[i].prefix.Masked().Contains(gw) {
					c.addrs[i].gw = gw
				}
			}
		}
	}
	return nil
}

// prefixes parses a list of addresses in CIDR notation from key.
func prefixes(key string, code uint, list []string) ([]address, error) {
	out := make([]address, 0, len(list))
	for _, s := range list {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, netconf.Errorf(code, "%s: %q is not an address in CIDR notation; write e.g. 10.10.0.5/24", key, s)
		}
		out = append(out, address{prefix: p})
	}
	return out, nil
}

// parsePrefix reads an address with its prefix length, IPv4-mapped IPv6
// written as IPv4 as the reference canonicalizes it.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96), nil
	}
	return p, nil
}
