package hostlocal

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

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
	Routes     []ipam.RouteConfig   `json:"routes,omitempty"`
	DataDir    string               `json:"dataDir,omitempty"`
	ResolvConf string               `json:"resolvConf,omitempty"`
	// ReclaimStale (ours; default true): when a range set is full, ADD first
	// frees the reservations whose owner's namespace is provably gone.
	ReclaimStale *bool `json:"reclaimStale,omitempty"`
}

// config is what a verb works with, validated.
type config struct {
	base         netconf.Base
	name         string
	dataDir      string
	resolvConf   string
	reclaimStale bool
	sets         []ipam.RangeSet
	routes       []*types.Route
	requested    []netip.Addr // from CNI_ARGS, args.cni.ips and runtimeConfig.ips
}

// storeConf is the configuration as DEL and GC read it, and as ADD reads it
// first (storeOf): the shared keys and where the reservations are. Without
// the ranges, a configuration whose ranges were since edited into something
// invalid, even of another JSON type, still releases what it reserved; and
// its types decode cold in half the time of the whole configuration's
// (~65 against ~120 µs, once per process).
type storeConf struct {
	netconf.Base
	// Shadows Base.IPAM, as in netConf.
	IPAM *struct {
		DataDir string `json:"dataDir,omitempty"`
	} `json:"ipam"`
}

// decode reads the configuration as DEL and GC need it.
func decode(stdin []byte) (*storeConf, error) {
	var n storeConf
	if err := netconf.Load(stdin, &n); err != nil {
		return nil, err
	}
	if n.IPAM == nil {
		return nil, errNoIPAM()
	}
	return &n, nil
}

func errNoIPAM() error {
	return netconf.Required("\"ipam\"", `add {"type":"host-local","ranges":[[{"subnet":"10.22.0.0/16"}]]}`)
}

// storeOf reads only where the configuration keeps its reservations; errors
// are left for loadConfig to report.
func storeOf(stdin []byte) (dataDir, network string) {
	var n storeConf
	_ = json.Unmarshal(stdin, &n)
	if n.IPAM == nil {
		return "", n.Name
	}
	return n.IPAM.DataDir, n.Name
}

// loadConfig reads and checks everything ADD, CHECK and STATUS need.
func loadConfig(stdin []byte, cniArgs string) (*config, error) {
	n := &netConf{}
	err := netconf.Load(stdin, n)
	if err == nil && n.IPAM == nil {
		err = errNoIPAM()
	}
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
	if c.routes, err = ipam.Routes("routes", n.IPAM.Routes); err != nil {
		return nil, err
	}
	if c.requested, err = requestedIPs(n, cniArgs); err != nil {
		return nil, err
	}
	return c, nil
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
