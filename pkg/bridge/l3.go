package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// setupL3 applies the IPAM result: addresses and routes in the container,
// gateway addresses on the bridge, forwarding, masquerading.
func (p *Plugin) setupL3(ctx context.Context, s *attach) error {
	a, c := s.a, s.c
	ipamRes, err := cniplugin.IPAMResult(c.IPAM.Type, s.ipam)
	if err != nil {
		return err
	}
	s.res.IPs, s.res.Routes, s.res.DNS = ipamRes.IPs, ipamRes.Routes, ipamRes.DNS
	gws, err := planGateways(s.res, c)
	if err != nil {
		return err
	}
	err = netns.DoFile(s.ns, func() error { return configureContainer(a.IfName, s.res, c.EnableDad) })
	if err != nil {
		return fmt.Errorf("configuring %q in %s: %w", a.IfName, a.Netns, err)
	}
	if c.IPMasq {
		if err := p.setupMasq(ctx, s); err != nil {
			return err
		}
	}
	if c.IsGW {
		return s.setupGateways(gws)
	}
	return nil
}

// planGateways points every IP at the container interface, fills in
// gateways (the subnet's first address) when the bridge is the gateway,
// adds a default route per family for isDefaultGateway and returns the
// gateway addresses the bridge must hold.
func planGateways(res *current.Result, c *NetConf) ([]netip.Prefix, error) {
	var gws []netip.Prefix
	hasDefault := map[bool]bool{} // by "is IPv6"
	for _, r := range res.Routes {
		if dst, err := link.Prefix(&r.Dst); err == nil && dst.Bits() == 0 && r.GW != nil {
			hasDefault[dst.Addr().Is6()] = true
		}
	}
	for _, ipc := range res.IPs {
		addr, err := link.Prefix(&ipc.Address)
		if err != nil {
			return nil, fmt.Errorf("IPAM returned a bad address: %w", err)
		}
		ipc.Interface = current.Int(idxContainer)
		if ipc.Gateway == nil && c.IsGW {
			ipc.Gateway = net.IP(addr.Masked().Addr().Next().AsSlice())
		}
		v6 := addr.Addr().Is6()
		if c.IsDefaultGW && !hasDefault[v6] {
			def := link.IPNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0))
			if !v6 {
				def = link.IPNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
			}
			res.Routes = append(res.Routes, &types.Route{Dst: *def, GW: ipc.Gateway})
			hasDefault[v6] = true
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

// configureContainer runs inside the container: sysctls, addresses, link
// up, routes. A route without a gateway goes via its family's gateway, as
// in the reference plugin.
func configureContainer(ifName string, res *current.Result, dad bool) error {
	l, err := link.ByName(ifName)
	if err != nil {
		return err
	}
	containerSysctls(ifName, res, dad)
	gwOf, err := link.AddAddrs(l, res.IPs, dad)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %q up: %w", ifName, err)
	}
	if slices.ContainsFunc(res.IPs, func(ipc *current.IPConfig) bool { return ipc.Address.IP.To4() == nil }) {
		if err := link.SettleDAD(l); err != nil {
			return err
		}
	}
	return link.AddRoutes(l, res.Routes, gwOf)
}

// containerSysctls sets what the reference sets. Failures are ignored as
// there: the keys are missing when the kernel has IPv6 disabled.
func containerSysctls(ifName string, res *current.Result, dad bool) {
	set := func(k, v string) { _ = link.Sysctl(k, v) }
	if slices.ContainsFunc(res.IPs, func(ipc *current.IPConfig) bool { return ipc.Address.IP.To4() == nil }) {
		set("net/ipv6/conf/"+ifName+"/disable_ipv6", "0")
		set("net/ipv6/conf/"+ifName+"/keep_addr_on_down", "1")
	}
	if dad {
		set("net/ipv6/conf/"+ifName+"/enhanced_dad", "1")
		set("net/ipv6/conf/"+ifName+"/accept_dad", "1")
	} else {
		set("net/ipv6/conf/"+ifName+"/accept_dad", "0")
	}
	set("net/ipv4/conf/"+ifName+"/arp_notify", "1")
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
		if err := link.EnableForwarding(gw.Addr().Is6()); err != nil {
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
