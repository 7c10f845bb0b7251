package link

import (
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
)

// AddRoutes adds an IPAM result's routes through l. A route without a
// gateway goes via its family's gateway in gwOf, and routes to one
// destination become multipath, as in the reference plugins.
func AddRoutes(l netlink.Link, routes []*types.Route, gwOf [2]net.IP) error {
	for _, r := range routes {
		nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &r.Dst, Gw: r.GW, Priority: r.Priority, MTU: r.MTU, AdvMSS: r.AdvMSS}
		if nr.Gw == nil {
			nr.Gw = gwOf[family.OfIP(r.Dst.IP)]
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

// AddAddrs adds the result's addresses to l, before it is up. With dad
// false they are added with IFA_F_NODAD: the kernel then never marks them
// tentative, which it does with accept_dad 0 too until its DAD work has
// run after the link came up, so that ADD could return an address the pod
// cannot use yet. It returns the first gateway of each family, by family,
// for AddRoutes.
func AddAddrs(l netlink.Link, ips []*current.IPConfig, dad bool) ([2]net.IP, error) {
	var gwOf [2]net.IP
	for _, ipc := range ips {
		f := family.OfIP(ipc.Address.IP)
		addr := &netlink.Addr{IPNet: &ipc.Address}
		if f == family.IPv6 && !dad {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(l, addr); err != nil {
			return gwOf, fmt.Errorf("adding address %v: %w", ipc.Address.String(), err)
		}
		if ipc.Gateway != nil && gwOf[f] == nil {
			gwOf[f] = ipc.Gateway
		}
	}
	return gwOf, nil
}

// dadTimeout bounds the wait for DAD; the kernel needs about a second per probe.
const dadTimeout = 5 * time.Second

// SettleDAD waits until no IPv6 address of l is tentative, since routes via
// a gateway cannot use a tentative source address, nor the pod any, and
// fails at once when another host holds one of them. Even with DAD off
// (accept_dad 0) the kernel marks the link-local address tentative when the
// link comes up and clears it from a work queue, so a plugin settles
// whenever the container has IPv6.
func SettleDAD(l netlink.Link) error {
	deadline := time.Now().Add(dadTimeout)
	for {
		addrs, err := Addrs(l, family.IPv6.Netlink())
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
