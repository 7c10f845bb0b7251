package overlay

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
)

// flannelName matches the device names flanneld and EnsureDevice give by default.
var flannelName = regexp.MustCompile(`^flannel(-v6)?\.[0-9]+$`)

// Cleanup removes the data plane from the node, for subnetd --cleanup and
// after kubeadm reset: every vxlan device named flannel.<VNI> or
// flannel-v6.<VNI> (ours or flanneld's, whatever the VNI) or named in extra,
// which takes their routes, neighbours, FDB entries and nexthop objects
// with them, and every route with RouteProtocol (DirectRouting and host-gw
// routes), both families. A link of another type is never deleted. It is
// idempotent.
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
// both). A route on a nexthop object goes with the nexthop's device, and
// so do our nexthops, which are only ever on our vxlan devices.
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
	k, err := openKernel(family.IPv4) // its family is unused: the dump below takes both
	if err != nil {
		return devices, nil, err
	}
	defer k.close()
	var nhs map[uint32]knexthop
	ok, err := k.nexthops()
	if ok {
		nhs, err = k.dumpNexthops()
	}
	if err != nil {
		return devices, nil, err
	}
	all, err := link.RetryDump(func() ([]kroute, error) { return k.dumpRoutes(unix.AF_UNSPEC) })
	if err != nil {
		return devices, nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range all {
		dev := r.link
		if n, found := nhs[r.nh]; found {
			dev = n.oif
		}
		if r.proto == RouteProtocol && !slices.Contains(doomed, dev) {
			routes = append(routes, r.netlinkRoute())
		}
	}
	return devices, routes, nil
}

// netlinkRoute is r as netlink.RouteDel takes it. A route on a nexthop
// object is named by destination, table and protocol alone: the kernel
// finds no such route by a gateway or device.
func (r kroute) netlinkRoute() netlink.Route {
	bits := r.dst.Addr().BitLen()
	nr := netlink.Route{
		Dst:   &net.IPNet{IP: r.dst.Addr().AsSlice(), Mask: net.CIDRMask(r.dst.Bits(), bits)},
		Table: int(r.table), Protocol: netlink.RouteProtocol(r.proto), Scope: netlink.Scope(r.scope), Type: int(r.typ),
	}
	if r.nh == 0 {
		nr.LinkIndex = r.link
		if r.gw.IsValid() {
			nr.Gw = r.gw.AsSlice()
		}
	}
	return nr
}
