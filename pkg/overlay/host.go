package overlay

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
)

// Host is what of the node a peer must not take over: its addresses and
// the routes of its main table that are not the overlay's. A peer subnet
// that holds one of them, routed through the overlay, would replace or
// shadow the node's own path (its underlay's connected route, its default
// gateway, its public IP), cutting the overlay's own legs.
type Host struct {
	Addrs  []netip.Addr // of every interface but the overlay's devices
	Routes []HostRoute  // one per next hop
}

// HostRoute is one route (or next hop) of the node that is not the
// overlay's: neither of RouteProtocol nor through a flannel device.
type HostRoute struct {
	Dst   netip.Prefix // 0.0.0.0/0 or ::/0 for a default route
	Gw    netip.Addr   // invalid for a connected route
	Dev   string
	Proto int
}

func (r HostRoute) String() string {
	s := r.Dst.String()
	if r.Dst.Bits() == 0 {
		s = "default"
	}
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s + " proto " + netlink.RouteProtocol(r.Proto).String()
}

// ReadHost reads the node's addresses and routes, both families, in the
// calling thread's network namespace. The overlay's devices are the vxlan
// links Cleanup would remove.
func ReadHost() (Host, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return Host{}, fmt.Errorf("opening a netlink socket: %w", err)
	}
	defer h.Close()
	links, err := link.RetryDump(h.LinkList)
	if err != nil {
		return Host{}, fmt.Errorf("listing links: %w", err)
	}
	names, overlay := map[int]string{}, map[int]bool{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		_, vx := l.(*netlink.Vxlan)
		overlay[l.Attrs().Index] = vx && flannelName.MatchString(l.Attrs().Name)
	}
	addrs, err := link.RetryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return Host{}, fmt.Errorf("listing addresses: %w", err)
	}
	var host Host
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !overlay[a.LinkIndex] {
			host.Addrs = append(host.Addrs, ip.Unmap())
		}
	}
	routes, err := link.RetryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return Host{}, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Protocol == RouteProtocol {
			continue
		}
		hops := []*netlink.NexthopInfo{{LinkIndex: r.LinkIndex, Gw: r.Gw}}
		if len(r.MultiPath) > 0 {
			hops = r.MultiPath
		}
		for _, nh := range hops {
			if !overlay[nh.LinkIndex] {
				host.Routes = append(host.Routes, hostRoute(r, nh, names[nh.LinkIndex]))
			}
		}
	}
	return host, nil
}

// hostRoute is one next hop of r, a default route given its prefix.
func hostRoute(r netlink.Route, nh *netlink.NexthopInfo, dev string) HostRoute {
	hr := HostRoute{Dev: dev, Proto: int(r.Protocol)}
	if ip, ok := netip.AddrFromSlice(nh.Gw); ok {
		hr.Gw = ip.Unmap()
	}
	if r.Dst != nil {
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		hr.Dst = netip.PrefixFrom(ip.Unmap(), ones)
	} else {
		f, _ := family.OfNetlink(r.Family)
		hr.Dst = f.Default()
	}
	return hr
}

// Conflict says why p must not be programmed on this node, or nil: its
// public IP is one of the node's addresses (a stale lease of this node), or
// its subnet holds an address of the node, covers (equals or contains) the
// destination of one of its routes, or holds a route's gateway. A broader
// route (the default route, a 10.0.0.0/8 via a router) is no conflict: the
// peer's more specific route takes only its own subnet from it.
func (h Host) Conflict(p Peer) error {
	sn := p.Subnet.Masked()
	for _, a := range h.Addrs {
		switch {
		case a == p.PublicIP:
			return fmt.Errorf("public IP %s is an address of this node (a stale lease of this node?)", a)
		case sn.Contains(a):
			return fmt.Errorf("subnet %s holds %s, an address of this node", sn, a)
		}
	}
	for _, r := range h.Routes {
		switch {
		case r.Dst == sn && r.Gw == p.PublicIP:
			// The peer's own route as flanneld's host-gw or DirectRouting
			// wrote it: replacing it moves no traffic elsewhere.
		case sn.Bits() <= r.Dst.Bits() && sn.Contains(r.Dst.Addr()):
			return fmt.Errorf("subnet %s covers this node's route %s", sn, r)
		case sn.Contains(r.Gw):
			return fmt.Errorf("subnet %s holds the gateway of this node's route %s", sn, r)
		}
	}
	return nil
}

// NodeConflict is Conflict for both families of one remote node (nil for
// a family it lacks): a node that conflicts in one family is refused whole,
// since what its lease says of the other is no more to be trusted.
func (h Host) NodeConflict(v4, v6 *Peer) error {
	for _, p := range []*Peer{v4, v6} {
		if p == nil {
			continue
		}
		if err := h.Conflict(*p); err != nil {
			return err
		}
	}
	return nil
}

// Equal reports whether two reads found the same, so that a caller
// re-checks its peers only when the node changed.
func (h Host) Equal(o Host) bool {
	return slices.Equal(h.Addrs, o.Addrs) && slices.Equal(h.Routes, o.Routes)
}
