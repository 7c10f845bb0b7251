package link

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
)

// CheckResult verifies, inside the container, that l holds the addresses the
// prevResult gives interface idx and that every route of the prevResult goes
// out of l: what CHECK of an interface plugin must find again.
func CheckResult(l netlink.Link, prev *current.Result, idx int) error {
	if err := checkAddrs(l, prev, idx); err != nil {
		return err
	}
	return checkRoutes(l, prev)
}

func checkAddrs(l netlink.Link, prev *current.Result, idx int) error {
	have, err := Addrs(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface != idx {
			continue
		}
		if !slices.ContainsFunc(have, func(a netlink.Addr) bool { return a.IPNet.String() == ipc.Address.String() }) {
			return fmt.Errorf("address %s of the prevResult is missing on %q", ipc.Address.String(), l.Attrs().Name)
		}
	}
	return nil
}

// checkRoutes looks up each route of the prevResult in its table, with its
// gateway when it has one. Routes to one destination may have been merged
// into one multipath route (AddRoutes adds them so), whose own link index is 0.
func checkRoutes(l netlink.Link, prev *current.Result) error {
	for _, r := range prev.Routes {
		filter := &netlink.Route{Dst: &r.Dst, Table: unix.RT_TABLE_MAIN}
		if r.Table != nil {
			filter.Table = *r.Table
		}
		dst, _ := netip.AddrFromSlice(r.Dst.IP)
		routes, err := netlink.RouteListFiltered(family.Of(dst.Unmap()).Netlink(), filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
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
