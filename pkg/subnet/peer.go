package subnet

import (
	"encoding/json"
	"fmt"
	"net"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/overlay"
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
	for _, f := range family.All() {
		sub, fc := *s.Of(f), c.of(f)
		switch {
		case !sub.IsValid():
		case !fc.enabled:
			return fmt.Errorf("%s subnet %s, but the network has no %s", f, sub, f)
		case !fc.network.Contains(sub.Addr()) || sub.Bits() < fc.network.Bits():
			return fmt.Errorf("subnet %s is outside the network %s", sub, *fc.network)
		case sub.Bits() != *fc.subnetLen:
			return fmt.Errorf("subnet %s is a /%d, but the network's subnets are /%d", sub, sub.Bits(), *fc.subnetLen)
		}
	}
	return nil
}

// LeasePeers reads what a lease asks of the other nodes of the network c: a
// peer per family that has a subnet and a usable public address. A lease
// whose subnets are not the network's (CheckPeer), of another backend or
// VNI, or with a VTEP MAC that is not one, is an error: subnetd skips it
// and cnictl reports it, for the same reasons.
func LeasePeers(c Config, s Subnets, a Attrs) (v4, v6 *overlay.Peer, err error) {
	if err := c.CheckPeer(s); err != nil {
		return nil, nil, err
	}
	b := c.Backend
	if a.BackendType != b.Type {
		return nil, nil, fmt.Errorf("backend %q, this network uses %q", a.BackendType, b.Type)
	}
	if s.V4.IsValid() && a.PublicIP.IsValid() && !a.PublicIP.IsUnspecified() {
		mac, err := vtepMAC(b, a.BackendData)
		if err != nil {
			return nil, nil, err
		}
		v4 = &overlay.Peer{Subnet: s.V4, PublicIP: a.PublicIP, VtepMAC: mac}
	}
	if s.V6.IsValid() && a.PublicIPv6.IsValid() {
		mac, err := vtepMAC(b, a.BackendV6Data)
		if err != nil {
			return nil, nil, fmt.Errorf("IPv6: %w", err)
		}
		v6 = &overlay.Peer{Subnet: s.V6, PublicIP: a.PublicIPv6, VtepMAC: mac}
	}
	if v4 == nil && v6 == nil {
		return nil, nil, fmt.Errorf("no public address for its subnets (PublicIP %s, PublicIPv6 %s)", a.PublicIP, a.PublicIPv6)
	}
	return v4, v6, nil
}

// vtepMAC reads the VTEP MAC of a lease's backend data (VXLANData) on a
// network whose backend uses one; host-gw needs none.
func vtepMAC(b overlay.Settings, data json.RawMessage) (net.HardwareAddr, error) {
	if !b.UsesVTEP() {
		return nil, nil
	}
	var d VXLANData
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("bad vxlan BackendData: %w", err)
	}
	if d.VNI != 0 && d.VNI != b.VNI {
		return nil, fmt.Errorf("VNI %d, this network uses %d", d.VNI, b.VNI)
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("VtepMAC %q is not an Ethernet address", d.VtepMAC)
	}
	return mac, nil
}
