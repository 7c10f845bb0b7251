package ptp

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
)

// hop is one pod address and the gateway the pod reaches its subnet by,
// which the host side holds.
type hop struct {
	addr netip.Prefix // as IPAM gave it: 10.1.1.5/24
	gw   netip.Addr
}

// planHops reads the addresses of IPAM's result. Each needs a gateway of
// its family: ptp has nothing else to route the pod through.
func planHops(ips []*current.IPConfig) ([]hop, error) {
	hops := make([]hop, 0, len(ips))
	for _, ipc := range ips {
		addr, err := link.Prefix(&ipc.Address)
		if err != nil {
			return nil, fmt.Errorf("IPAM returned a bad address: %w", err)
		}
		gw, ok := netip.AddrFromSlice(ipc.Gateway)
		if gw = gw.Unmap(); !ok || family.Of(gw) != family.OfPrefix(addr) || gw == addr.Addr() {
			return nil, netconf.Invalid("IPAM returned address %v with gateway %v; ptp routes the pod through its gateway, so set a \"gateway\" of the same family other than the address in the IPAM range (host-local defaults to the subnet's first address)", addr, ipc.Gateway)
		}
		hops = append(hops, hop{addr: addr, gw: gw})
	}
	return hops, nil
}

// host is a single address as a prefix: 10.1.1.1/32, fd00::1/128.
func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

var scopeLink = int(netlink.SCOPE_LINK)

// podRoutes are the pod's routes of h: the gateway on the link, the subnet
// through the gateway.
func (h hop) podRoutes() []*types.Route {
	gw := link.IPNet(host(h.gw))
	return []*types.Route{{Dst: *gw, Scope: &scopeLink}, {Dst: *link.IPNet(h.addr.Masked()), GW: gw.IP}}
}

// routeViaGateway runs in the container: the kernel's route to h's subnet
// on l goes, the pod's routes of h come, with h's address as their source.
func (h hop) routeViaGateway(l netlink.Link) error {
	subnet := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: link.IPNet(h.addr.Masked()), Scope: netlink.SCOPE_NOWHERE}
	// A /32 or /128 address has no such route.
	if err := netlink.RouteDel(subnet); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("deleting the route to %v: %w", h.addr.Masked(), err)
	}
	for _, r := range h.podRoutes() {
		nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &r.Dst, Gw: r.GW, Src: h.addr.Addr().AsSlice()}
		if r.Scope != nil {
			nr.Scope = netlink.Scope(*r.Scope)
		}
		// Two addresses of a family may share their gateway.
		if err := netlink.RouteAdd(nr); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("adding the route to %v via %v: %w", r.Dst.String(), r.GW, err)
		}
	}
	return nil
}

// setupHost runs on the node: forwarding on, the host veth up with each
// gateway as a host address (without DAD: the pod needs it at once), and
// a route to each pod address through it. The route replaces one left to
// the same address by an attachment that is gone: IPAM gave the address
// to this pod.
func setupHost(l netlink.Link, hops []hop) error {
	if err := enableForwarding(hops); err != nil {
		return err
	}
	name := l.Attrs().Name
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %q up: %w", name, err)
	}
	for _, h := range hops {
		gw := &netlink.Addr{IPNet: link.IPNet(host(h.gw)), Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(l, gw); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("adding gateway address %v to %q: %w", gw.IPNet, name, err)
		}
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: link.IPNet(host(h.addr.Addr())), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("adding the route to %v via %q: %w", h.addr.Addr(), name, err)
		}
	}
	return nil
}
