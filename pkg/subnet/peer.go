package subnet

import (
	"fmt"
	"net/netip"
)

// CheckPeer says why s, the subnets of another node's lease, cannot be part
// of the network c describes, or nil: each half must be of a family the
// network enables, inside its Network (IPv6Network) and of its SubnetLen
// (IPv6SubnetLen). A key outside the network (the underlay's subnet, a /32
// of its gateway, anyone's public range) would otherwise be routed through
// the overlay, taking the node's own routes over; flanneld programs any key,
// but allocates only such subnets, so no lease of a working node fails this.
// SubnetMin and SubnetMax bound allocation only: a reservation outside them
// is still the network's.
func (c Config) CheckPeer(s Subnets) error {
	halves := []struct {
		name    string
		sub     netip.Prefix
		enabled bool
		network netip.Prefix
		length  int
	}{
		{"IPv4", s.V4, c.EnableIPv4, c.Network, c.SubnetLen},
		{"IPv6", s.V6, c.EnableIPv6, c.IPv6Network, c.IPv6SubnetLen},
	}
	for _, h := range halves {
		switch {
		case !h.sub.IsValid():
		case !h.enabled:
			return fmt.Errorf("%s subnet %s, but the network has no %s", h.name, h.sub, h.name)
		case !h.network.Contains(h.sub.Addr()) || h.sub.Bits() < h.network.Bits():
			return fmt.Errorf("subnet %s is outside the network %s", h.sub, h.network)
		case h.sub.Bits() != h.length:
			return fmt.Errorf("subnet %s is a /%d, but the network's subnets are /%d", h.sub, h.sub.Bits(), h.length)
		}
	}
	return nil
}
