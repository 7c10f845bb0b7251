// Package subnet is the domain of subnetd: the cluster network config and the
// per-node leases that flanneld keeps in etcd, a Registry interface that hides
// the store, and a Manager that acquires, renews, watches and releases a node's
// lease. LeasePeers turns a lease into the overlay's peers, decoding its
// backend data (VXLANData). It imports pkg/overlay for the backend settings
// and the Peer type (the overlay never imports this package), and no store
// client: pkg/subnet/etcd implements Registry. The config and leases keep
// flanneld's two fields per family on the wire; code reads a family's half
// by family.Family (Config.NetworkOf, Subnets.Of, Attrs.PublicIPOf).
package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cnisuite/cni/pkg/family"
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

// Families lists the address families the network enables, IPv4 first.
func (c Config) Families() []family.Family {
	var out []family.Family
	for _, f := range family.All() {
		if c.of(f).enabled {
			out = append(out, f)
		}
	}
	return out
}

// NetworkOf is the network of family f: Network or IPv6Network.
func (c Config) NetworkOf(f family.Family) netip.Prefix { return *c.of(f).network }

// SubnetLenOf is the subnet length of family f: SubnetLen or IPv6SubnetLen.
func (c Config) SubnetLenOf(f family.Family) int { return *c.of(f).subnetLen }

// familyConfig is one family's part of a Config, its fields' addresses.
type familyConfig struct {
	enabled   bool
	network   *netip.Prefix
	subnetLen *int
	min, max  *netip.Addr
}

// of is family f's part of c. The keys stay flanneld's, one per family,
// in the JSON.
func (c *Config) of(f family.Family) familyConfig {
	if f == family.IPv6 {
		return familyConfig{c.EnableIPv6, &c.IPv6Network, &c.IPv6SubnetLen, &c.IPv6SubnetMin, &c.IPv6SubnetMax}
	}
	return familyConfig{c.EnableIPv4, &c.Network, &c.SubnetLen, &c.SubnetMin, &c.SubnetMax}
}

func (c *Config) validate() error {
	if !c.EnableIPv4 && !c.EnableIPv6 {
		return fmt.Errorf("%w: EnableIPv4 and EnableIPv6 are both false; enable at least one", ErrInvalidConfig)
	}
	for _, f := range c.Families() {
		if err := keysOf[f].fill(f, c.of(f)); err != nil {
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

// familyKeys names the keys of one address family, for messages, with an
// example network and the family's subnet lengths.
type familyKeys struct {
	network, subnetLen, min, max string
	example                      string
	defaultLen, maxNetworkLen    int
}

// keysOf holds each family's keys.
var keysOf = [2]familyKeys{
	family.IPv4: {"Network", "SubnetLen", "SubnetMin", "SubnetMax", "10.244.0.0/16", 24, 28},
	family.IPv6: {"IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "fd00:10:244::/56", 64, 124},
}

// fill checks family f's network and range and sets its defaults, with
// flannel's rules: at least four subnets, SubnetMin/Max inside the network
// and on a subnet boundary.
func (k familyKeys) fill(f family.Family, fc familyConfig) error {
	network, subnetLen, lo, hi := fc.network, fc.subnetLen, fc.min, fc.max
	n := *network
	if !n.IsValid() || family.OfPrefix(n) != f {
		return fmt.Errorf("%w: %s is missing or of the wrong family; set it, e.g. %q", ErrInvalidConfig, k.network, k.example)
	}
	if n != n.Masked() {
		return fmt.Errorf("%w: %s %s has host bits set; use %s", ErrInvalidConfig, k.network, n, n.Masked())
	}
	bits := n.Addr().BitLen()
	switch {
	case *subnetLen == 0 && n.Bits() > k.maxNetworkLen:
		return fmt.Errorf("%w: %s %s is too small; use a /%d or larger", ErrInvalidConfig, k.network, n, k.maxNetworkLen)
	case *subnetLen == 0 && n.Bits() <= k.defaultLen-2:
		*subnetLen = k.defaultLen
	case *subnetLen == 0:
		*subnetLen = n.Bits() + 2
	case *subnetLen > bits-2:
		return fmt.Errorf("%w: %s %d leaves no room for pods; use at most %d", ErrInvalidConfig, k.subnetLen, *subnetLen, bits-2)
	case *subnetLen < n.Bits()+2:
		return fmt.Errorf("%w: %s %d gives %s fewer than four subnets; use at least %d", ErrInvalidConfig, k.subnetLen, *subnetLen, n, n.Bits()+2)
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
	}{{k.min, *lo}, {k.max, *hi}} {
		if !n.Contains(a.addr) {
			return fmt.Errorf("%w: %s %s is outside %s %s", ErrInvalidConfig, a.name, a.addr, k.network, n)
		}
		if p := netip.PrefixFrom(a.addr, *subnetLen); p.Masked().Addr() != a.addr {
			return fmt.Errorf("%w: %s %s is not on a /%d boundary; use %s", ErrInvalidConfig, a.name, a.addr, *subnetLen, p.Masked().Addr())
		}
	}
	if hi.Less(*lo) {
		return fmt.Errorf("%w: %s %s is above %s %s", ErrInvalidConfig, k.min, *lo, k.max, *hi)
	}
	return nil
}

// Equal reports whether two validated configs mean the same network.
func (c Config) Equal(o Config) bool { return c == o }
