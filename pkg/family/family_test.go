package family

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOf(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Family
	}{
		{"10.0.0.1", IPv4}, {"fd00::1", IPv6}, {"::ffff:10.0.0.1", IPv6},
	} {
		a := netip.MustParseAddr(c.in)
		if got := Of(a); got != c.want {
			t.Errorf("Of(%s) = %v, want %v", c.in, got, c.want)
		}
		if got := OfPrefix(netip.PrefixFrom(a, 8)); got != c.want {
			t.Errorf("OfPrefix(%s/8) = %v, want %v", c.in, got, c.want)
		}
	}
	// net.IP keeps IPv4 in 16 bytes; netlink still treats it as IPv4.
	if OfIP(net.ParseIP("10.0.0.1")) != IPv4 || OfIP(net.ParseIP("fd00::1")) != IPv6 {
		t.Error("OfIP misjudges a family")
	}
}

func TestRenderings(t *testing.T) {
	v4 := []any{IPv4.String(), IPv4.Version(), IPv4.Bits(), IPv4.Netlink(), IPv4.IPTables(), IPv4.Sysctl(), IPv4.Default().String()}
	v6 := []any{IPv6.String(), IPv6.Version(), IPv6.Bits(), IPv6.Netlink(), IPv6.IPTables(), IPv6.Sysctl(), IPv6.Default().String()}
	want4 := []any{"IPv4", 4, 32, unix.AF_INET, "iptables", "ipv4", "0.0.0.0/0"}
	want6 := []any{"IPv6", 6, 128, unix.AF_INET6, "ip6tables", "ipv6", "::/0"}
	for i := range want4 {
		if v4[i] != want4[i] || v6[i] != want6[i] {
			t.Errorf("rendering %d: got %v/%v, want %v/%v", i, v4[i], v6[i], want4[i], want6[i])
		}
	}
	if All() != [2]Family{IPv4, IPv6} || int(IPv6) != 1 {
		t.Error("All must be IPv4 then IPv6, indexes 0 and 1")
	}
	if IPv4.NFTables() != "ip" || IPv6.NFTables() != "ip6" {
		t.Error("NFTables names a family wrong")
	}
	for af, want := range map[int]Family{unix.AF_INET: IPv4, unix.AF_INET6: IPv6} {
		if f, ok := OfNetlink(af); f != want || !ok {
			t.Errorf("OfNetlink(%d) = %v, %v; want %v", af, f, ok, want)
		}
	}
	if f, ok := OfNetlink(unix.AF_BRIDGE); f != IPv4 || ok {
		t.Errorf("OfNetlink(AF_BRIDGE) = %v, %v; want IPv4, false", f, ok)
	}
}

func TestMulticast(t *testing.T) {
	if IPv4.Multicast().String() != "224.0.0.0/4" || IPv6.Multicast().String() != "ff00::/8" {
		t.Errorf("Multicast: %v, %v", IPv4.Multicast(), IPv6.Multicast())
	}
}
