package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// Check verifies that what ADD reported still holds: the container
// interface is a macvlan of the configured mode on the configured master
// (matched by ifindex and namespace, not by name), with the MAC, MTU,
// addresses and routes of the prevResult. It works without IPAM (L2 mode).
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
	idx := slices.IndexFunc(prev.Interfaces, func(i *current.Interface) bool {
		return i.Name == a.IfName && i.Sandbox == a.Netns
	})
	if idx < 0 {
		return fmt.Errorf("prevResult lists no interface %q in sandbox %s", a.IfName, a.Netns)
	}
	nsf, err := netns.Open(a.Netns)
	if err != nil {
		return netns.CNIError(err, a.Netns)
	}
	defer nsf.Close()
	want, err := c.wantMacvlan(nsf)
	if err != nil {
		return err
	}
	return netns.DoFile(nsf, func() error { return checkContainer(c, prev, idx, want) })
}

// wantMacvlan resolves the master as ADD did and says how the container's
// link must refer to it: by the master's ifindex and, when the master is
// in the node, by the id the container gives the node's namespace.
func (c *NetConf) wantMacvlan(container *os.File) (link.MacvlanWant, error) {
	w := link.MacvlanWant{Mode: c.mode, MasterNsID: -1}
	master, err := c.resolveMaster(container)
	if err != nil {
		return w, err
	}
	w.MasterIndex = master.Attrs().Index
	if c.LinkContNs {
		return w, nil
	}
	node, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return w, fmt.Errorf("opening the current network namespace: %w", err)
	}
	defer node.Close()
	err = netns.DoFile(container, func() error {
		w.MasterNsID, err = netlink.GetNetNsIdByFd(int(node.Fd()))
		return err
	})
	if err != nil {
		return w, fmt.Errorf("reading the container's id for the node's namespace: %w", err)
	}
	return w, nil
}

// checkContainer runs inside the container.
func checkContainer(c *NetConf, prev *current.Result, idx int, want link.MacvlanWant) error {
	iface := prev.Interfaces[idx]
	l, err := link.ByName(iface.Name)
	if err != nil {
		return err
	}
	if err := link.VerifyMacvlan(l, want); err != nil {
		return err
	}
	if mac := l.Attrs().HardwareAddr.String(); iface.Mac != "" && iface.Mac != mac {
		return fmt.Errorf("container interface %q has MAC %s, the prevResult says %s", iface.Name, mac, iface.Mac)
	}
	if c.MTU != 0 && l.Attrs().MTU != c.MTU {
		return fmt.Errorf("container interface %q has MTU %d, the configuration says %d", iface.Name, l.Attrs().MTU, c.MTU)
	}
	if err := checkAddrs(l, prev, idx); err != nil {
		return err
	}
	return checkRoutes(l, prev)
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

// checkRoutes looks up each route of the prevResult through l, in its
// table, with its gateway when it has one. Routes to one destination may
// have been merged into one multipath route.
func checkRoutes(l netlink.Link, prev *current.Result) error {
	for _, r := range prev.Routes {
		filter := &netlink.Route{Dst: &r.Dst, Table: unix.RT_TABLE_MAIN}
		if r.Table != nil {
			filter.Table = *r.Table
		}
		routes, err := netlink.RouteListFiltered(link.Family(addrOf(r.Dst.IP)), filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("listing routes to %s: %w", r.Dst.String(), err)
		}
		if !slices.ContainsFunc(routes, func(have netlink.Route) bool { return routeVia(have, l.Attrs().Index, r.GW) }) {
			return fmt.Errorf("route to %s via %v of the prevResult is missing in the container", r.Dst.String(), r.GW)
		}
	}
	return nil
}

// routeVia tells whether r, or one of its next hops, goes out of link
// index through gw (any gateway when gw is nil).
func routeVia(r netlink.Route, index int, gw net.IP) bool {
	if r.LinkIndex == index && (gw == nil || r.Gw.Equal(gw)) {
		return true
	}
	return slices.ContainsFunc(r.MultiPath, func(nh *netlink.NexthopInfo) bool {
		return nh.LinkIndex == index && (gw == nil || nh.Gw.Equal(gw))
	})
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
