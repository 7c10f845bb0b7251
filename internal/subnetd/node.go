package subnetd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
)

// nodeID returns the node's stable identity: --node-id, else the one kept in
// the data directory, else /etc/machine-id (or a random one) kept there from
// now on, so that it survives a reinstall of the OS image's machine-id too.
func nodeID(flagID, dataDir string) (string, error) {
	if flagID != "" {
		return flagID, nil
	}
	path := filepath.Join(dataDir, "node-id")
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	id := ""
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		id = strings.TrimSpace(string(b))
	}
	if id == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		id = hex.EncodeToString(b)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("creating --data-dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keeping the node identity: %w", err)
	}
	return id, nil
}

// underlay is the interface that carries the overlay and this node's public
// addresses on it.
type underlay struct {
	name   string
	mtu    int
	public [2]netip.Addr // per family; invalid when the interface has none
}

// set makes ip the public address of its family.
func (u *underlay) set(ip netip.Addr) { u.public[family.Of(ip)] = ip }

// findUnderlay picks the interface as flanneld does (chooseLink). Its
// public address of each family is --public-ip (--public-ipv6), else the
// address that chose it (an --iface address, the one an --iface-regex
// matched, the source of the route to --iface-can-reach), else its first
// global unicast one.
func findUnderlay(c *Config, log *slog.Logger) (underlay, error) {
	l, chosenBy, err := chooseLink(c, log)
	if err != nil {
		return underlay{}, err
	}
	u := underlay{name: l.Attrs().Name, mtu: l.Attrs().MTU}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return underlay{}, fmt.Errorf("addresses of %s: %w", u.name, err)
	}
	for i := len(addrs) - 1; i >= 0; i-- { // backwards: the first one wins
		if ip, ok := netip.AddrFromSlice(addrs[i].IP); ok && ip.Unmap().IsGlobalUnicast() {
			u.set(ip.Unmap())
		}
	}
	if chosenBy.IsValid() {
		u.set(chosenBy)
	}
	for _, ip := range []string{c.PublicIP, c.PublicIPv6} {
		if ip != "" {
			u.set(netip.MustParseAddr(ip)) // checked by Validate
		}
	}
	return u, nil
}

// chooseLink is flanneld's choice of the interface: each --iface in turn
// (a name, or an address the interface holds), then each --iface-regex,
// then --iface-can-reach; the first that finds one wins, and the misses
// before it are logged. Without any of them: the interface holding --public-ip (or
// --public-ipv6), else that of the IPv4 default route, else that of the
// IPv6 one (flanneld takes the family its network config enables). It also
// returns the address that chose the interface, if one did.
func chooseLink(c *Config, log *slog.Logger) (netlink.Link, netip.Addr, error) {
	if len(c.Ifaces) == 0 && len(c.IfaceRegex) == 0 && c.IfaceCanReach == "" {
		return defaultLink(c)
	}
	var tries []func() (netlink.Link, netip.Addr, error)
	for _, iface := range c.Ifaces {
		tries = append(tries, func() (netlink.Link, netip.Addr, error) { return linkByNameOrAddr(iface) })
	}
	for _, re := range c.IfaceRegex {
		tries = append(tries, func() (netlink.Link, netip.Addr, error) { return linkByRegex(regexp.MustCompile(re)) })
	}
	if c.IfaceCanReach != "" {
		tries = append(tries, func() (netlink.Link, netip.Addr, error) { return linkToward(netip.MustParseAddr(c.IfaceCanReach)) })
	}
	var misses []error
	for _, try := range tries {
		l, ip, err := try()
		if err != nil {
			misses = append(misses, err)
			continue
		}
		if len(misses) > 0 {
			log.Info("the earlier interface choices found none", "interface", l.Attrs().Name, "misses", errors.Join(misses...))
		}
		return l, ip, nil
	}
	return nil, netip.Addr{}, fmt.Errorf("no interface matches --iface, --iface-regex or --iface-can-reach: %w", errors.Join(misses...))
}

// defaultLink is the interface without --iface, --iface-regex or
// --iface-can-reach: the one holding --public-ip (--public-ipv6), as
// flanneld's, else (where flanneld gives up) the default route's.
func defaultLink(c *Config) (netlink.Link, netip.Addr, error) {
	for _, ip := range []string{c.PublicIP, c.PublicIPv6} {
		if ip == "" {
			continue
		}
		if l, _, err := linkByNameOrAddr(ip); err == nil {
			return l, netip.Addr{}, nil
		}
	}
	for _, f := range family.All() {
		routes, err := netlink.RouteList(nil, f.Netlink())
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("reading routes: %w", err)
		}
		for _, r := range routes {
			if isDefault(r) && r.LinkIndex > 0 {
				l, err := netlink.LinkByIndex(r.LinkIndex)
				return l, netip.Addr{}, err
			}
		}
	}
	return nil, netip.Addr{}, errors.New("no default route, IPv4 or IPv6, to find the overlay's interface by; pass --iface, --iface-regex or --iface-can-reach")
}

// isDefault reports whether r is a default route through a device (not,
// say, IPv6's "unreachable default").
func isDefault(r netlink.Route) bool {
	if r.Type != unix.RTN_UNICAST {
		return false
	}
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

// linkByNameOrAddr is one --iface: an address the interface holds (which
// it returns), or its name.
func linkByNameOrAddr(iface string) (netlink.Link, netip.Addr, error) {
	ip, err := netip.ParseAddr(iface)
	if err != nil {
		l, err := netlink.LinkByName(iface)
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("--iface %s: %w", iface, err)
		}
		return l, netip.Addr{}, nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		for _, a := range linkAddrs(l) {
			if a == ip {
				return l, ip, nil
			}
		}
	}
	return nil, netip.Addr{}, fmt.Errorf("--iface %s: no interface has that address", iface)
}

// linkByRegex is one --iface-regex, as flanneld matches it: the first
// interface with an address the expression matches (IPv4 addresses first,
// then IPv6), which it returns; else the first whose name it matches.
func linkByRegex(re *regexp.Regexp) (netlink.Link, netip.Addr, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("listing links: %w", err)
	}
	for _, f := range family.All() {
		for _, l := range links {
			for _, a := range linkAddrs(l) {
				if family.Of(a) == f && (a.IsGlobalUnicast() || a.IsLinkLocalUnicast()) && re.MatchString(a.String()) {
					return l, a, nil
				}
			}
		}
	}
	for _, l := range links {
		if re.MatchString(l.Attrs().Name) {
			return l, netip.Addr{}, nil
		}
	}
	return nil, netip.Addr{}, fmt.Errorf("--iface-regex %s matches no interface's address or name", re)
}

// linkToward is --iface-can-reach: the interface of the route to ip, as
// ip route get finds it, and the source address of that route.
func linkToward(ip netip.Addr) (netlink.Link, netip.Addr, error) {
	routes, err := netlink.RouteGet(net.IP(ip.AsSlice()))
	if err == nil && len(routes) == 0 {
		err = errors.New("no route")
	}
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("--iface-can-reach %s: %w", ip, err)
	}
	l, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("--iface-can-reach %s: %w", ip, err)
	}
	src, _ := netip.AddrFromSlice(routes[0].Src)
	return l, src.Unmap(), nil
}

// linkAddrs is l's addresses of both families; none when unreadable.
func linkAddrs(l netlink.Link) []netip.Addr {
	addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out
}
