package link

import (
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddRoutes adds an IPAM result's routes through l. A route without a
// gateway goes via its family's gateway in gwOf (keyed by "is IPv6"), and
// routes to one destination become multipath, as in the reference plugins.
func AddRoutes(l netlink.Link, routes []*types.Route, gwOf map[bool]net.IP) error {
	for _, r := range routes {
		nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &r.Dst, Gw: r.GW, Priority: r.Priority, MTU: r.MTU, AdvMSS: r.AdvMSS}
		if nr.Gw == nil {
			nr.Gw = gwOf[r.Dst.IP.To4() == nil]
		}
		if r.Table != nil {
			nr.Table = *r.Table
		}
		if r.Scope != nil {
			nr.Scope = netlink.Scope(*r.Scope)
		}
		if err := netlink.RouteAddEcmp(nr); err != nil {
			return fmt.Errorf("adding route %v via %v: %w", r.Dst.String(), nr.Gw, err)
		}
	}
	return nil
}

// dadTimeout bounds the wait for DAD; the kernel needs about a second per probe.
const dadTimeout = 5 * time.Second

// SettleDAD waits until no IPv6 address of l is tentative, since routes via
// a gateway cannot use a tentative source address, and fails at once when
// another host holds one of them.
func SettleDAD(l netlink.Link) error {
	deadline := time.Now().Add(dadTimeout)
	for {
		addrs, err := Addrs(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(addrs, func(a netlink.Addr) bool { return a.Flags&unix.IFA_F_DADFAILED != 0 }); i >= 0 {
			return fmt.Errorf("address %v failed duplicate address detection: another host on the segment holds it", addrs[i].IPNet)
		}
		if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.Flags&unix.IFA_F_TENTATIVE != 0 }) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("IPv6 addresses of %q are still tentative after %v (duplicate address detection)", l.Attrs().Name, dadTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
