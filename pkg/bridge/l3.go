package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// setupL3 applies the IPAM result: addresses and routes in the container,
// gateway addresses on the bridge, forwarding, masquerading.
func setupL3(ctx context.Context, s *attach) error {
	c := s.c
	s.res.IPs, s.res.Routes, s.res.DNS = s.ipam.IPs, s.ipam.Routes, s.ipam.DNS
	gws, err := planGateways(s.res, c)
	if err != nil {
		return err
	}
	if err := s.Configure(s.res, c.ifOptions()); err != nil {
		return err
	}
	if c.IPMasq {
		if err := setupMasq(ctx, s); err != nil {
			return err
		}
	}
	if c.IsGW {
		return s.setupGateways(gws)
	}
	return nil
}

// planGateways fills in gateways (the subnet's first address) when the
// bridge is the gateway, adds a default route per family for
// isDefaultGateway and returns the gateway addresses the bridge must hold.
func planGateways(res *current.Result, c *NetConf) ([]netip.Prefix, error) {
	var gws []netip.Prefix
	var hasDefault [2]bool
	for _, r := range res.Routes {
		if dst, err := link.Prefix(&r.Dst); err == nil && dst.Bits() == 0 && r.GW != nil {
			hasDefault[family.OfPrefix(dst)] = true
		}
	}
	for _, ipc := range res.IPs {
		addr, err := link.Prefix(&ipc.Address)
		if err != nil {
			return nil, fmt.Errorf("IPAM returned a bad address: %w", err)
		}
		if ipc.Gateway == nil && c.IsGW {
			ipc.Gateway = net.IP(addr.Masked().Addr().Next().AsSlice())
		}
		if f := family.OfPrefix(addr); c.IsDefaultGW && !hasDefault[f] {
			res.Routes = append(res.Routes, &types.Route{Dst: *link.IPNet(f.Default()), GW: ipc.Gateway})
			hasDefault[f] = true
		}
		if c.IsGW {
			gw, ok := netip.AddrFromSlice(ipc.Gateway)
			if !ok || !addr.Contains(gw.Unmap()) {
				return nil, netconf.Invalid("gateway %v is not inside the subnet %v; fix the IPAM \"gateway\"", ipc.Gateway, addr.Masked())
			}
			gws = append(gws, netip.PrefixFrom(gw.Unmap(), addr.Bits()))
		}
	}
	return gws, nil
}

// setupGateways puts the gateway addresses on the bridge (or on its VLAN
// interface) and enables forwarding for their families.
func (s *attach) setupGateways(gws []netip.Prefix) error {
	var target netlink.Link = s.br
	if s.c.Vlan != 0 {
		l, err := s.vlanGateway()
		if err != nil {
			return err
		}
		target = l
	}
	for _, gw := range gws {
		err := link.EnsureAddr(target, gw, gws, s.c.ForceAddress)
		var conflict *link.AddrConflictError
		if errors.As(err, &conflict) {
			return conflictError(conflict)
		}
		if err != nil {
			return fmt.Errorf("setting the gateway address on %q: %w", target.Attrs().Name, err)
		}
		if err := link.EnableForwarding(family.Of(gw.Addr())); err != nil {
			return err
		}
	}
	return nil
}

// conflictError explains the classic failure after a node's pod subnet
// changed and says both ways out.
func conflictError(e *link.AddrConflictError) error {
	return netconf.Errorf(netconf.CodeInvalidConfig,
		"%w: the bridge still holds the gateway of subnet %v but this network now uses subnet %v (the node's pod subnet probably changed). "+
			"Set \"forceAddress\": true to replace the old address, or delete the bridge (ip link delete %s) once no pod uses it; pods still on %v must be recreated",
		e, e.Have.Masked(), e.Want.Masked(), e.Link, e.Have.Masked())
}

// vlanGateway returns the "<bridge>.<vlan>" interface that carries the
// gateway addresses of a VLAN network, creating it (a veth whose peer is an
// access port of the VLAN) if needed. It is shared and never undone.
func (s *attach) vlanGateway() (netlink.Link, error) {
	name := fmt.Sprintf("%s.%d", s.br.Name, s.c.Vlan)
	if l, err := netlink.LinkByName(name); err == nil {
		s.res.Interfaces = append(s.res.Interfaces, &current.Interface{Name: name, Mac: l.Attrs().HardwareAddr.String()})
		return l, nil
	}
	self, err := netns.Here()
	if err != nil {
		return nil, err
	}
	defer self.Close()
	peer, err := link.CreateVeth(link.VethOptions{PeerName: name, Peer: self, MTU: s.br.MTU})
	if err != nil {
		return nil, fmt.Errorf("creating VLAN gateway interface %q: %w", name, err)
	}
	err = link.AttachToBridge(peer, s.br, link.PortOptions{})
	if err == nil {
		err = link.SetPortVlans(peer, link.VlanOptions{Access: s.c.Vlan, PreserveDefault: s.c.PreserveDefaultVlan})
	}
	var l netlink.Link
	if err == nil {
		l, err = link.ByName(name)
	}
	if err == nil {
		err = netlink.LinkSetUp(l)
	}
	if err != nil {
		return nil, errors.Join(err, link.DeleteIfExists(name))
	}
	s.res.Interfaces = append(s.res.Interfaces, &current.Interface{Name: name, Mac: l.Attrs().HardwareAddr.String()})
	return l, nil
}
