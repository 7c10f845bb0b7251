package bandwidth

import (
	"math"
	"net/netip"

	"github.com/cnisuite/cni/pkg/netconf"
)

// Entry is one set of the plugin's keys: rates in bits/s and bursts in
// bits (the reference's; 0 leaves a direction alone), and CIDRs whose
// traffic alone is shaped, or is not (the reference v1.5.x's; they exclude
// each other). runtimeConfig.bandwidth holds one: the "bandwidth"
// capability, which kubelet fills from a pod's
// kubernetes.io/ingress-bandwidth and egress-bandwidth annotations.
type Entry struct {
	IngressRate     *uint64  `json:"ingressRate,omitempty"`
	IngressBurst    *uint64  `json:"ingressBurst,omitempty"`
	EgressRate      *uint64  `json:"egressRate,omitempty"`
	EgressBurst     *uint64  `json:"egressBurst,omitempty"`
	UnshapedSubnets []string `json:"unshapedSubnets,omitempty"`
	ShapedSubnets   []string `json:"shapedSubnets,omitempty"`
}

func (e *Entry) hasLimits() bool {
	return e.IngressRate != nil || e.IngressBurst != nil || e.EgressRate != nil || e.EgressBurst != nil
}

func (e *Entry) hasSubnets() bool { return e.UnshapedSubnets != nil || e.ShapedSubnets != nil }

// NetConf is the bandwidth configuration. It repeats Entry's keys at its
// top level rather than embedding Entry, which decoding errors would name.
type NetConf struct {
	netconf.Base
	IngressRate     *uint64  `json:"ingressRate,omitempty"`
	IngressBurst    *uint64  `json:"ingressBurst,omitempty"`
	EgressRate      *uint64  `json:"egressRate,omitempty"`
	EgressBurst     *uint64  `json:"egressBurst,omitempty"`
	UnshapedSubnets []string `json:"unshapedSubnets,omitempty"`
	ShapedSubnets   []string `json:"shapedSubnets,omitempty"`
	RuntimeConfig   struct {
		Bandwidth *Entry `json:"bandwidth,omitempty"`
	} `json:"runtimeConfig"`
}

func (n *NetConf) top() *Entry {
	return &Entry{n.IngressRate, n.IngressBurst, n.EgressRate, n.EgressBurst, n.UnshapedSubnets, n.ShapedSubnets}
}

// scope says which traffic is shaped.
type scope int

const (
	shapeAll          scope = iota // no subnets: a tbf, as the reference
	shapeListed                    // shapedSubnets
	shapeAllButListed              // unshapedSubnets
)

// direction is one direction's limit; a zero rate leaves it alone.
type direction struct{ rate, burst uint64 }

func (d direction) set() bool { return d.rate > 0 }

// conf is a checked configuration.
type conf struct {
	*NetConf
	ingress, egress direction
	scope           scope
	subnets         []netip.Prefix
}

func (c *conf) shapes() bool { return c.ingress.set() || c.egress.set() }

// loadConf parses and checks everything ADD and CHECK use before anything
// is touched. Each group of keys, the limits and the subnets, comes from
// the top level when that has a key of the group, else from
// runtimeConfig.bandwidth: for the limits that is the reference's rule (the
// operator's static limits are not raised by a pod's annotations), and it
// lets static subnets apply to the rates kubelet passes.
func loadConf(stdin []byte) (*conf, error) {
	n := &NetConf{}
	if err := netconf.Load(stdin, n); err != nil {
		return nil, err
	}
	top := n.top()
	limits, subnets := top, top
	if rt := n.RuntimeConfig.Bandwidth; rt != nil {
		if !limits.hasLimits() {
			limits = rt
		}
		if !subnets.hasSubnets() {
			subnets = rt
		}
	}
	c := &conf{NetConf: n}
	var err error
	if c.ingress, err = checkDirection("ingress", value(limits.IngressRate), value(limits.IngressBurst)); err != nil {
		return nil, err
	}
	if c.egress, err = checkDirection("egress", value(limits.EgressRate), value(limits.EgressBurst)); err != nil {
		return nil, err
	}
	if err := c.parseSubnets(subnets); err != nil {
		return nil, err
	}
	return c, nil
}

// value is an absent key's 0.
func value(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// maxBurst is the reference's bound: tc holds a burst of under 4 GB.
const maxBurst = 8 * math.MaxUint32

// checkDirection applies the reference's rules (both of a pair or neither;
// a burst under 4 GB) and ours: a rate of at least one byte per second, the
// unit tc shapes in (the reference divides by zero below it).
func checkDirection(dir string, rate, burst uint64) (direction, error) {
	switch {
	case rate != 0 && burst == 0:
		return direction{}, netconf.Invalid("%sRate is set but %sBurst is not: set both (bits/s and bits) or neither", dir, dir)
	case rate == 0 && burst != 0:
		return direction{}, netconf.Invalid("%sBurst is set but %sRate is not: set both (bits/s and bits) or neither", dir, dir)
	case rate != 0 && rate < 8:
		return direction{}, netconf.Invalid("%sRate %d is below 8 bits/s (1 byte/s), the least tc can shape; raise it", dir, rate)
	case burst >= maxBurst:
		return direction{}, netconf.Invalid("%sBurst %d bits is 4 GB or more, over what tc can hold; lower it below %d", dir, burst, uint64(maxBurst))
	}
	return direction{rate, burst}, nil
}

func (c *conf) parseSubnets(s *Entry) error {
	if len(s.ShapedSubnets) > 0 && len(s.UnshapedSubnets) > 0 {
		return netconf.Invalid("shapedSubnets and unshapedSubnets exclude each other: keep one (shape only the listed subnets, or all but them)")
	}
	key, list := "shapedSubnets", s.ShapedSubnets
	c.scope = shapeListed
	if len(s.UnshapedSubnets) > 0 {
		key, list = "unshapedSubnets", s.UnshapedSubnets
		c.scope = shapeAllButListed
	}
	if len(list) == 0 {
		c.scope = shapeAll
		return nil
	}
	for i, str := range list {
		p, err := netip.ParsePrefix(str)
		if err != nil || p.Addr().Is4In6() {
			return netconf.Invalid("%s[%d] %q is not a CIDR like 10.0.0.0/8 or fd00::/8 (IPv4 in IPv4 notation)", key, i, str)
		}
		c.subnets = append(c.subnets, p.Masked())
	}
	return nil
}
