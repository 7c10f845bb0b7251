package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
)

// IPNet converts a prefix for netlink and CNI results, keeping the address
// (not the masked network): 10.1.0.5/24 stays 10.1.0.5/24.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Prefix converts a net.IPNet from netlink or a CNI result; IPv4 comes out
// as IPv4 whatever its byte length.
func Prefix(n *net.IPNet) (netip.Prefix, error) {
	if n == nil {
		return netip.Prefix{}, errors.New("missing address")
	}
	a, ok := netip.AddrFromSlice(n.IP)
	ones, bits := n.Mask.Size()
	if !ok || bits == 0 {
		return netip.Prefix{}, fmt.Errorf("invalid address %v", n)
	}
	a = a.Unmap()
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), nil
}

// AddrConflictError says a link already holds an address that contradicts
// the one being configured (typically a bridge kept the gateway of an old
// subnet after the node's pod subnet changed).
type AddrConflictError struct {
	Link string
	Have netip.Prefix // what the link holds
	Want netip.Prefix // what was asked
}

// Error keeps the reference plugin's wording, which operators search for.
func (e *AddrConflictError) Error() string {
	return fmt.Sprintf("%q already has an IP address different from %v (it holds %v)", e.Link, e.Want, e.Have)
}

// EnsureAddr puts want on l. An address of the same family that conflicts
// with it (for IPv4 any other address not in keep; for IPv6 an overlapping
// one) is replaced when force is set and reported as an *AddrConflictError
// otherwise. The address skips DAD: it is a gateway that pods need at once.
func EnsureAddr(l netlink.Link, want netip.Prefix, keep []netip.Prefix, force bool) error {
	have, err := Addrs(l, family.Of(want.Addr()).Netlink())
	if err != nil {
		return fmt.Errorf("listing addresses of %q: %w", l.Attrs().Name, err)
	}
	for _, a := range have {
		p, err := Prefix(a.IPNet)
		if err != nil || p == want || p.Addr().IsLinkLocalUnicast() || slices.Contains(keep, p) {
			continue
		}
		if want.Addr().Is6() && !p.Overlaps(want) {
			continue // IPv6 links hold many addresses; only overlapping ones conflict
		}
		if !force {
			return &AddrConflictError{Link: l.Attrs().Name, Have: p, Want: want}
		}
		if err := netlink.AddrDel(l, &a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("removing old address %v from %q: %w", p, l.Attrs().Name, err)
		}
	}
	addr := &netlink.Addr{IPNet: IPNet(want), Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("adding address %v to %q: %w", want, l.Attrs().Name, err)
	}
	return nil
}
