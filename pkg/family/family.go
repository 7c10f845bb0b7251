// Package family names an IP address family. Code that keeps one thing per family indexes a [2]T by
// it, and code that renders a family for the kernel or a tool asks it here, so no bool or magic number
// stands for a family anywhere. It imports only the standard library and x/sys/unix; everything in the
// suite may import it.
package family

import (
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Family is IPv4 or IPv6. IPv4 is the zero value, and the two values are 0 and 1 so that a [2]T is a
// per-family table indexed by the family itself.
type Family uint8

const (
	IPv4 Family = iota
	IPv6
)

// All is both families, IPv4 first: the order every per-family loop and report uses.
func All() [2]Family { return [2]Family{IPv4, IPv6} }

// Of is the family of a: IPv6 for an IPv6 address (an IPv4-mapped one included), IPv4 otherwise.
func Of(a netip.Addr) Family {
	if a.Is6() {
		return IPv6
	}
	return IPv4
}

// OfPrefix is the family of p's address.
func OfPrefix(p netip.Prefix) Family { return Of(p.Addr()) }

// OfIP is the family of a net.IP: IPv4 when it has a 4-byte form (as netlink treats it).
func OfIP(ip net.IP) Family {
	if ip.To4() != nil {
		return IPv4
	}
	return IPv6
}

// String is "IPv4" or "IPv6", as messages name the family.
func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Version is 4 or 6.
func (f Family) Version() int {
	if f == IPv6 {
		return 6
	}
	return 4
}

// Bits is the address length: 32 or 128.
func (f Family) Bits() int {
	if f == IPv6 {
		return 128
	}
	return 32
}

// Netlink is the address family netlink takes (AF_INET or AF_INET6, netlink.FAMILY_V4/V6). nftables'
// NFPROTO_IPV4/IPV6 have the same values.
func (f Family) Netlink() int {
	if f == IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// IPTables is the command for the family: "iptables" or "ip6tables".
func (f Family) IPTables() string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

// Sysctl is the family's directory under /proc/sys/net: "ipv4" or "ipv6".
func (f Family) Sysctl() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// Unspecified is the family's any-address, 0.0.0.0 or ::.
func (f Family) Unspecified() netip.Addr {
	if f == IPv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// Default is the family's default route, 0.0.0.0/0 or ::/0.
func (f Family) Default() netip.Prefix { return netip.PrefixFrom(f.Unspecified(), 0) }

// OfNetlink is the family of a netlink address family (AF_INET, AF_INET6),
// as a route or address message carries it; ok is false for any other
// (AF_UNSPEC, AF_BRIDGE, ...), with IPv4.
func OfNetlink(af int) (f Family, ok bool) {
	switch af {
	case unix.AF_INET:
		return IPv4, true
	case unix.AF_INET6:
		return IPv6, true
	}
	return IPv4, false
}

// NFTables is the family's nftables address family, as rules and tables
// name it: "ip" or "ip6".
func (f Family) NFTables() string {
	if f == IPv6 {
		return "ip6"
	}
	return "ip"
}

// Multicast is the family's multicast range, 224.0.0.0/4 or ff00::/8, which masquerading leaves alone.
func (f Family) Multicast() netip.Prefix {
	if f == IPv6 {
		return netip.MustParsePrefix("ff00::/8")
	}
	return netip.MustParsePrefix("224.0.0.0/4")
}
