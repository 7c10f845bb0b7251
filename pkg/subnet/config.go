// Package subnet is the domain of subnetd: the cluster network config and the
// per-node leases that flanneld keeps in etcd, a Registry interface that hides
// the store, and a Manager that acquires, renews, watches and releases a node's
// lease. LeasePeers turns a lease into the overlay's peers, decoding its
// backend data (VXLANData). It imports pkg/overlay for the backend settings
// and the Peer type (the overlay never imports this package), and no store
// client: pkg/subnet/etcd implements Registry.
package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cnisuite/cni/pkg/overlay"
)

// ErrInvalidConfig marks a network config that cannot be used.
var ErrInvalidConfig = errors.New("invalid network config")

// Config is flannel's network config, the JSON at <prefix>/config.
type Config struct {
	EnableIPv4    bool
	EnableIPv6    bool
	Network       netip.Prefix
	SubnetLen     int
	SubnetMin     netip.Addr
	SubnetMax     netip.Addr
	IPv6Network   netip.Prefix
	IPv6SubnetLen int
	IPv6SubnetMin netip.Addr
	IPv6SubnetMax netip.Addr
	Backend       overlay.Settings // checked, and its defaults filled in, by pkg/overlay
	// EnableNFTables puts the host rules in nftables instead of iptables,
	// as flanneld's key of the same name does.
	EnableNFTables bool
}

// ParseConfig decodes and validates a network config, filling in flannel's
// defaults (IPv4 on, SubnetLen 24 or 64, SubnetMin the second subnet,
// SubnetMax the last one, vxlan VNI 1 on port 8472).
func ParseConfig(data []byte) (Config, error) {
	if len(data) > MaxValueSize {
		return Config{}, fmt.Errorf("%w: %d bytes: %w; it looks like {\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}", ErrInvalidConfig, len(data), ErrValueTooLarge)
	}
	c := Config{EnableIPv4: true}
	if err := json.Unmarshal(data, &c); err != nil {
		return Config{}, fmt.Errorf("%w: decoding JSON: %w; it looks like {\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}", ErrInvalidConfig, err)
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Families lists the address families the network enables, IPv4 first,
// each as whether it is IPv6: [false], [true] or [false true].
func (c Config) Families() []bool {
	var v6s []bool
	if c.EnableIPv4 {
		v6s = append(v6s, false)
	}
	if c.EnableIPv6 {
		v6s = append(v6s, true)
	}
	return v6s
}

func (c *Config) validate() error {
	if !c.EnableIPv4 && !c.EnableIPv6 {
		return fmt.Errorf("%w: EnableIPv4 and EnableIPv6 are both false; enable at least one", ErrInvalidConfig)
	}
	if c.EnableIPv4 {
		r := family{"Network", "SubnetLen", "SubnetMin", "SubnetMax", 24, 28}
		if err := r.fill(&c.Network, &c.SubnetLen, &c.SubnetMin, &c.SubnetMax, true); err != nil {
			return err
		}
	}
	if c.EnableIPv6 {
		r := family{"IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", 64, 124}
		if err := r.fill(&c.IPv6Network, &c.IPv6SubnetLen, &c.IPv6SubnetMin, &c.IPv6SubnetMax, false); err != nil {
			return err
		}
	}
	b, err := c.Backend.WithDefaults()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c.Backend = b
	return nil
}

// family names the keys of one address family, for messages.
type family struct {
	network, subnetLen, min, max string
	defaultLen, maxNetworkLen    int
}

// fill checks one family's network and range and sets its defaults, with
// flannel's rules: at least four subnets, SubnetMin/Max inside the network
// and on a subnet boundary.
func (f family) fill(network *netip.Prefix, subnetLen *int, lo, hi *netip.Addr, v4 bool) error {
	n := *network
	if !n.IsValid() || n.Addr().Is4() != v4 {
		return fmt.Errorf("%w: %s is missing or of the wrong family; set it, e.g. %q", ErrInvalidConfig, f.network, map[bool]string{true: "10.244.0.0/16", false: "fd00:10:244::/56"}[v4])
	}
	if n != n.Masked() {
		return fmt.Errorf("%w: %s %s has host bits set; use %s", ErrInvalidConfig, f.network, n, n.Masked())
	}
	bits := n.Addr().BitLen()
	switch {
	case *subnetLen == 0 && n.Bits() > f.maxNetworkLen:
		return fmt.Errorf("%w: %s %s is too small; use a /%d or larger", ErrInvalidConfig, f.network, n, f.maxNetworkLen)
	case *subnetLen == 0 && n.Bits() <= f.defaultLen-2:
		*subnetLen = f.defaultLen
	case *subnetLen == 0:
		*subnetLen = n.Bits() + 2
	case *subnetLen > bits-2:
		return fmt.Errorf("%w: %s %d leaves no room for pods; use at most %d", ErrInvalidConfig, f.subnetLen, *subnetLen, bits-2)
	case *subnetLen < n.Bits()+2:
		return fmt.Errorf("%w: %s %d gives %s fewer than four subnets; use at least %d", ErrInvalidConfig, f.subnetLen, *subnetLen, n, n.Bits()+2)
	}
	if !lo.IsValid() {
		*lo = nthSubnet(n.Addr(), *subnetLen, 1)
	}
	if !hi.IsValid() {
		*hi = lastSubnet(n, *subnetLen)
	}
	for _, a := range []struct {
		name string
		addr netip.Addr
	}{{f.min, *lo}, {f.max, *hi}} {
		if !n.Contains(a.addr) {
			return fmt.Errorf("%w: %s %s is outside %s %s", ErrInvalidConfig, a.name, a.addr, f.network, n)
		}
		if p := netip.PrefixFrom(a.addr, *subnetLen); p.Masked().Addr() != a.addr {
			return fmt.Errorf("%w: %s %s is not on a /%d boundary; use %s", ErrInvalidConfig, a.name, a.addr, *subnetLen, p.Masked().Addr())
		}
	}
	if hi.Less(*lo) {
		return fmt.Errorf("%w: %s %s is above %s %s", ErrInvalidConfig, f.min, *lo, f.max, *hi)
	}
	return nil
}

// Equal reports whether two validated configs mean the same network.
func (c Config) Equal(o Config) bool { return c == o }
