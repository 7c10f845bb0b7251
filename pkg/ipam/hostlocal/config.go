package hostlocal

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

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
		IPRanges [][]ipam.RangeConfig `json:"ipRanges,omitempty"`
		IPs      []string             `json:"ips,omitempty"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			IPs []string `json:"ips,omitempty"`
		} `json:"cni"`
	} `json:"args"`
}

// ipamConf holds the keys of the reference host-local plugin. The embedded
// range is the legacy single-range form (top-level subnet, rangeStart, ...).
type ipamConf struct {
	ipam.RangeConfig
	Type       string               `json:"type"`
	Ranges     [][]ipam.RangeConfig `json:"ranges,omitempty"`
	Routes     []routeConf          `json:"routes,omitempty"`
	DataDir    string               `json:"dataDir,omitempty"`
	ResolvConf string               `json:"resolvConf,omitempty"`
	// ReclaimStale (ours; default true): when a range set is full, ADD first
	// frees the reservations whose owner's namespace is provably gone.
	ReclaimStale *bool `json:"reclaimStale,omitempty"`
}

// routeConf is a route as configured; the keys past gw are passed through
// to the result as the reference passes them.
type routeConf struct {
	Dst      string `json:"dst"`
	GW       string `json:"gw,omitempty"`
	MTU      int    `json:"mtu,omitempty"`
	AdvMSS   int    `json:"advmss,omitempty"`
	Priority int    `json:"priority,omitempty"`
	Table    *int   `json:"table,omitempty"`
	Scope    *int   `json:"scope,omitempty"`
}

// route is a validated routeConf.
type route struct {
	conf routeConf
	dst  netip.Prefix // host bits kept, as the reference keeps them
	gw   netip.Addr
}

// config is what a verb works with, validated.
type config struct {
	base         netconf.Base
	name         string
	dataDir      string
	resolvConf   string
	reclaimStale bool
	sets         []ipam.RangeSet
	routes       []route
	requested    []netip.Addr // from CNI_ARGS, args.cni.ips and runtimeConfig.ips
}

// decode reads the configuration without checking ranges: enough for DEL and
// GC, which must work even after the ranges were edited into something invalid.
func decode(stdin []byte) (*netConf, error) {
	var n netConf
	if err := netconf.Load(stdin, &n); err != nil {
		return nil, err
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	if n.IPAM == nil {
		return nil, netconf.Required("\"ipam\"", `add {"type":"host-local","ranges":[[{"subnet":"10.22.0.0/16"}]]}`)
	}
	return &n, nil
}

// loadConfig reads and checks everything ADD, CHECK and STATUS need.
func loadConfig(stdin []byte, cniArgs string) (*config, error) {
	n, err := decode(stdin)
	if err != nil {
		return nil, err
	}
	c := &config{base: n.Base, name: n.Name, dataDir: n.IPAM.DataDir, resolvConf: n.IPAM.ResolvConf,
		reclaimStale: n.IPAM.ReclaimStale == nil || *n.IPAM.ReclaimStale}
	// As the reference: runtime ranges first, then the legacy single range,
	// then the configured sets; each set yields one address.
	sets := slices.Clone(n.RuntimeConfig.IPRanges)
	if strings.TrimSpace(n.IPAM.Subnet) != "" {
		sets = append(sets, []ipam.RangeConfig{n.IPAM.RangeConfig})
	}
	if c.sets, err = ipam.ParseRangeSets(append(sets, n.IPAM.Ranges...)); err != nil {
		return nil, err
	}
	if c.routes, err = parseRoutes(n.IPAM.Routes); err != nil {
		return nil, err
	}
	if c.requested, err = requestedIPs(n, cniArgs); err != nil {
		return nil, err
	}
	return c, nil
}

func parseRoutes(rcs []routeConf) ([]route, error) {
	out := make([]route, 0, len(rcs))
	for i, rc := range rcs {
		dst, err := netip.ParsePrefix(strings.TrimSpace(rc.Dst))
		if err != nil || dst.Addr().Zone() != "" || dst.Addr().Is4In6() {
			return nil, netconf.Invalid("routes[%d].dst %q is not a CIDR; write e.g. 0.0.0.0/0 or ::/0", i, rc.Dst)
		}
		r := route{conf: rc, dst: dst}
		if strings.TrimSpace(rc.GW) != "" {
			if r.gw, err = ipam.ParseAddr(fmt.Sprintf("routes[%d].gw", i), rc.GW); err != nil {
				return nil, err
			}
			if r.gw.BitLen() != r.dst.Addr().BitLen() {
				return nil, netconf.Invalid("routes[%d]: gw %s and dst %s are of different IP families; use a gateway of the destination's family", i, r.gw, r.dst)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// requestedIPs collects the addresses asked for, each "ip" or "ip/len" (the
// length is ignored, as the reference ignores it). Duplicates collapse.
func requestedIPs(n *netConf, cniArgs string) ([]netip.Addr, error) {
	args, err := netconf.ParseArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	add := func(source string, code uint, s string) error {
		a, err := parseRequested(s)
		if err != nil {
			return netconf.Errorf(code, "%s: %q is not an IP address; write e.g. 10.22.0.5 or fd00::5", source, s)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
		return nil
	}
	if v := args["IP"]; v != "" {
		for s := range strings.SplitSeq(v, ",") {
			if err := add("CNI_ARGS IP", netconf.CodeInvalidEnv, s); err != nil {
				return nil, err
			}
		}
	}
	for _, s := range n.Args.CNI.IPs {
		if err := add("args.cni.ips", netconf.CodeInvalidConfig, s); err != nil {
			return nil, err
		}
	}
	for _, s := range n.RuntimeConfig.IPs {
		if err := add("runtimeConfig.ips", netconf.CodeInvalidConfig, s); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func parseRequested(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, err
		}
		s = p.Addr().String()
	}
	return ipam.ParseAddr("requested IP", s)
}

// requestedPerSet assigns each requested address to the range set holding
// it: a set gives one address per attachment, so at most one per set.
func (c *config) requestedPerSet() ([]netip.Addr, error) {
	out := make([]netip.Addr, len(c.sets))
	for _, a := range c.requested {
		i := slices.IndexFunc(c.sets, func(s ipam.RangeSet) bool { _, ok := s.RangeFor(a); return ok })
		if i < 0 {
			return nil, netconf.Invalid("requested IP %s is outside every range (%s); request an address inside one, or add a range that holds it", a, c.allRanges())
		}
		if out[i].IsValid() {
			return nil, netconf.Invalid("requested IPs %s and %s are both in range set %d (%s); an attachment gets one address per set, so request at most one per set", out[i], a, i, c.sets[i])
		}
		out[i] = a
	}
	return out, nil
}

func (c *config) allRanges() string {
	parts := make([]string, len(c.sets))
	for i, s := range c.sets {
		parts[i] = s.String()
	}
	return strings.Join(parts, "; ")
}
