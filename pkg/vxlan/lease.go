package vxlan

import (
	"encoding/json"
	"fmt"
	"net"

	"github.com/cnisuite/cni/pkg/subnet"
)

// LeasePeers reads what a lease asks of the other nodes of the network c: a
// peer per family that has a subnet and a usable public address. A lease
// whose subnets are not the network's (subnet.Config.CheckPeer), of another
// backend or VNI, or with a VTEP MAC that is not one, is an error: subnetd
// skips it and cnictl reports it, for the same reasons.
func LeasePeers(c subnet.Config, s subnet.Subnets, a subnet.Attrs) (v4, v6 *Peer, err error) {
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
		v4 = &Peer{Subnet: s.V4, PublicIP: a.PublicIP, VtepMAC: mac}
	}
	if s.V6.IsValid() && a.PublicIPv6.IsValid() {
		mac, err := vtepMAC(b, a.BackendV6Data)
		if err != nil {
			return nil, nil, fmt.Errorf("IPv6: %w", err)
		}
		v6 = &Peer{Subnet: s.V6, PublicIP: a.PublicIPv6, VtepMAC: mac}
	}
	if v4 == nil && v6 == nil {
		return nil, nil, fmt.Errorf("no public address for its subnets (PublicIP %s, PublicIPv6 %s)", a.PublicIP, a.PublicIPv6)
	}
	return v4, v6, nil
}

// vtepMAC reads the VTEP MAC of vxlan backend data; host-gw needs none.
func vtepMAC(b subnet.Backend, data json.RawMessage) (net.HardwareAddr, error) {
	if b.Type != subnet.BackendVXLAN {
		return nil, nil
	}
	var d subnet.VXLANData
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
