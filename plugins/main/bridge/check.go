package main

import (
	"context"
	"fmt"
	"net"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// Check verifies that what ADD reported still holds: the bridge, the
// container interface (MAC, MTU, addresses, routes), and a host veth that is
// its peer and a port of the bridge. It works without IPAM (L2 mode).
func (p *plugin) Check(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	prev, err := c.PrevResult()
	if err != nil {
		return err
	}
	if prev == nil {
		return netconf.Invalid("CHECK needs the prevResult of ADD in the configuration; runtimes pass it from their cache")
	}
	if c.IPAM.Type != "" {
		if _, err := a.Delegate(ctx, "CHECK", c.IPAM.Type, a.StdinData); err != nil {
			return fmt.Errorf("IPAM plugin %q: %w", c.IPAM.Type, err)
		}
	}
	br, err := checkBridge(c)
	if err != nil {
		return err
	}
	contIdx := slices.IndexFunc(prev.Interfaces, func(i *current.Interface) bool {
		return i.Name == a.IfName && i.Sandbox == a.Netns
	})
	if contIdx < 0 {
		return fmt.Errorf("prevResult lists no interface %q in sandbox %s", a.IfName, a.Netns)
	}
	var cont netlink.Link
	err = netns.Do(a.Netns, func() error {
		cont, err = checkContainer(c, prev, contIdx)
		return err
	})
	if err != nil {
		return netns.CNIError(err, a.Netns)
	}
	return checkHostVeth(prev, br, cont)
}

func checkBridge(c *NetConf) (*netlink.Bridge, error) {
	br, err := link.BridgeByName(c.BrName)
	if err != nil {
		return nil, fmt.Errorf("CNI bridge %q: %w", c.BrName, err)
	}
	if promisc := br.Promisc != 0; promisc != c.PromiscMode {
		return nil, fmt.Errorf("bridge %q has promiscuous mode %v, the configuration says %v", c.BrName, promisc, c.PromiscMode)
	}
	if c.MTU != 0 && br.MTU != c.MTU {
		return nil, fmt.Errorf("bridge %q has MTU %d, the configuration says %d", c.BrName, br.MTU, c.MTU)
	}
	return br, nil
}

// checkContainer runs inside the container and returns its interface.
func checkContainer(c *NetConf, prev *current.Result, idx int) (netlink.Link, error) {
	want := prev.Interfaces[idx]
	l, err := link.ByName(want.Name)
	if err != nil {
		return nil, err
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return nil, fmt.Errorf("container interface %q is a %s, not a veth", want.Name, l.Type())
	}
	mac := l.Attrs().HardwareAddr.String()
	if (want.Mac != "" && want.Mac != mac) || (c.mac != nil && c.mac.String() != mac) {
		return nil, fmt.Errorf("container interface %q has MAC %s, expected %s", want.Name, mac, want.Mac)
	}
	if c.MTU != 0 && l.Attrs().MTU != c.MTU {
		return nil, fmt.Errorf("container interface %q has MTU %d, the configuration says %d", want.Name, l.Attrs().MTU, c.MTU)
	}
	if err := checkAddrs(l, prev, idx); err != nil {
		return nil, err
	}
	return l, checkRoutes(l, prev)
}

func checkAddrs(l netlink.Link, prev *current.Result, idx int) error {
	have, err := link.Addrs(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface != idx {
			continue
		}
		found := slices.ContainsFunc(have, func(a netlink.Addr) bool { return a.IPNet.String() == ipc.Address.String() })
		if !found {
			return fmt.Errorf("address %s of the prevResult is missing on %q", ipc.Address.String(), l.Attrs().Name)
		}
	}
	return nil
}

func checkRoutes(l netlink.Link, prev *current.Result) error {
	for _, r := range prev.Routes {
		filter := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &r.Dst, Table: 254}
		if r.Table != nil {
			filter.Table = *r.Table
		}
		family := netlink.FAMILY_V6
		if r.Dst.IP.To4() != nil {
			family = netlink.FAMILY_V4
		}
		routes, err := netlink.RouteListFiltered(family, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("listing routes to %s: %w", r.Dst.String(), err)
		}
		ok := slices.ContainsFunc(routes, func(have netlink.Route) bool { return r.GW == nil || have.Gw.Equal(r.GW) || gwInMultipath(have, r.GW) })
		if !ok {
			return fmt.Errorf("route to %s via %v of the prevResult is missing in the container", r.Dst.String(), r.GW)
		}
	}
	return nil
}

func gwInMultipath(r netlink.Route, gw net.IP) bool {
	return slices.ContainsFunc(r.MultiPath, func(nh *netlink.NexthopInfo) bool { return nh.Gw.Equal(gw) })
}

// checkHostVeth finds, among the prevResult's host interfaces, the veth
// that is the container interface's peer and checks it is a port of br.
func checkHostVeth(prev *current.Result, br *netlink.Bridge, cont netlink.Link) error {
	for _, iface := range prev.Interfaces {
		if iface.Sandbox != "" || iface.Name == br.Name {
			continue
		}
		l, err := netlink.LinkByName(iface.Name)
		if err != nil || l.Attrs().Index != cont.Attrs().ParentIndex {
			continue
		}
		if _, ok := l.(*netlink.Veth); !ok || l.Attrs().ParentIndex != cont.Attrs().Index {
			return fmt.Errorf("host interface %q is not the veth peer of container interface %q", iface.Name, cont.Attrs().Name)
		}
		if l.Attrs().MasterIndex != br.Index {
			return fmt.Errorf("host veth %q is not a port of bridge %q; re-run ADD or attach it (ip link set %s master %s)", iface.Name, br.Name, iface.Name, br.Name)
		}
		if iface.Mac != "" && iface.Mac != l.Attrs().HardwareAddr.String() {
			return fmt.Errorf("host veth %q has MAC %s, the prevResult says %s", iface.Name, l.Attrs().HardwareAddr, iface.Mac)
		}
		return nil
	}
	return fmt.Errorf("no host veth of the prevResult is the peer of container interface %q (peer ifindex %d); it was deleted or replaced", cont.Attrs().Name, cont.Attrs().ParentIndex)
}
