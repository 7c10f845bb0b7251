package vxlan

import (
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
)

// flannelName matches the device names flanneld and Ensure give by default.
var flannelName = regexp.MustCompile(`^flannel(-v6)?\.[0-9]+$`)

// Cleanup removes the data plane from the node, for subnetd --cleanup and
// after kubeadm reset: every vxlan device named flannel.<VNI> or
// flannel-v6.<VNI> (ours or flanneld's, whatever the VNI) or named in extra,
// which takes their routes, neighbours and FDB entries with them, and every
// route with RouteProtocol (DirectRouting and host-gw routes), both
// families. A link of another type is never deleted. It is idempotent.
func Cleanup(extra ...string) error {
	devices, routes, err := Leftovers(extra...)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range devices {
		errs = append(errs, link.DeleteIfExists(name))
	}
	for _, r := range routes {
		if err := gone(netlink.RouteDel(&r)); err != nil {
			errs = append(errs, fmt.Errorf("deleting route %s: %w", r.Dst, err))
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists what Cleanup removes: the devices, and the routes with
// RouteProtocol that do not go with them (cnictl reset --dry-run prints
// both).
func Leftovers(extra ...string) (devices []string, routes []netlink.Route, err error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, nil, fmt.Errorf("listing links: %w", err)
	}
	var doomed []int
	for _, l := range links {
		name := l.Attrs().Name
		if _, ok := l.(*netlink.Vxlan); ok && (flannelName.MatchString(name) || slices.Contains(extra, name)) {
			devices = append(devices, name)
			doomed = append(doomed, l.Attrs().Index)
		}
	}
	filter := &netlink.Route{Protocol: RouteProtocol}
	all, err := retry("routes", func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return devices, nil, err
	}
	for _, r := range all {
		if !slices.Contains(doomed, r.LinkIndex) {
			routes = append(routes, r)
		}
	}
	return devices, routes, nil
}
