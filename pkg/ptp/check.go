package ptp

import (
	"fmt"
	"net/netip"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netns"
)

// check is ptp's part of CHECK: in the container, a veth with the
// prevResult's MAC, the configured MTU, addresses and routes, and each
// address's routes through its gateway; on the node, its peer, listed in
// the prevResult, holding the gateways and routing the pod's addresses.
func check(k *containerif.Checking, c *NetConf) error {
	var hops []hop
	for _, ipc := range k.Prev.IPs {
		if ipc.Interface == nil || *ipc.Interface == k.Idx {
			hs, err := planHops([]*current.IPConfig{ipc})
			if err != nil {
				return err
			}
			hops = append(hops, hs...)
		}
	}
	var cont netlink.Link
	err := netns.Do(k.Args.Netns, func() error {
		var err error
		if cont, err = k.Link(containerif.Want{Kind: containerif.IsVeth, MTU: c.MTU}); err != nil {
			return err
		}
		viaGateway := &current.Result{}
		for _, h := range hops {
			viaGateway.Routes = append(viaGateway.Routes, h.podRoutes()...)
		}
		return link.CheckResult(cont, viaGateway, k.Idx)
	})
	if err != nil {
		return netns.CNIError(err, k.Args.Netns)
	}
	return checkHost(k.Prev, cont, hops)
}

// checkHost finds the container veth's peer on the node and checks that
// the prevResult lists it and that it holds each gateway and the route
// to each pod address.
func checkHost(prev *current.Result, cont netlink.Link, hops []hop) error {
	l, err := netlink.LinkByIndex(cont.Attrs().ParentIndex)
	if err != nil || l.Attrs().ParentIndex != cont.Attrs().Index {
		return fmt.Errorf("the host side of container interface %q (ifindex %d) is gone or not its peer; re-run ADD", cont.Attrs().Name, cont.Attrs().ParentIndex)
	}
	name := l.Attrs().Name
	if !slices.ContainsFunc(prev.Interfaces, func(i *current.Interface) bool { return i.Sandbox == "" && i.Name == name }) {
		return fmt.Errorf("host veth %q, the peer of container interface %q, is not in the prevResult", name, cont.Attrs().Name)
	}
	addrs, err := link.Addrs(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, h := range hops {
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { p, _ := link.Prefix(a.IPNet); return p == host(h.gw) }) {
			return fmt.Errorf("host veth %q lacks gateway address %v", name, host(h.gw))
		}
		if err := hostRoute(l, h.addr.Addr()); err != nil {
			return err
		}
	}
	return nil
}

// hostRoute checks that the node routes a to l.
func hostRoute(l netlink.Link, a netip.Addr) error {
	filter := &netlink.Route{Dst: link.IPNet(host(a)), LinkIndex: l.Attrs().Index}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
	if err != nil {
		return fmt.Errorf("listing routes to %v: %w", a, err)
	}
	if len(routes) == 0 {
		return fmt.Errorf("the node has no route to %v via host veth %q", a, l.Attrs().Name)
	}
	return nil
}
