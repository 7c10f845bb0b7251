package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
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
	name     string
	mtu      int
	publicV4 netip.Addr
	publicV6 netip.Addr
}

// findUnderlay picks the interface: --iface as a name or an address, else
// the interface of the default route; --public-ip overrides its address.
func findUnderlay(iface, publicIP string) (underlay, error) {
	l, err := pickLink(iface)
	if err != nil {
		return underlay{}, err
	}
	u := underlay{name: l.Attrs().Name, mtu: l.Attrs().MTU}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return underlay{}, fmt.Errorf("addresses of %s: %w", u.name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !ip.Unmap().IsGlobalUnicast() {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() && !u.publicV4.IsValid() {
			u.publicV4 = ip
		} else if ip.Is6() && !u.publicV6.IsValid() {
			u.publicV6 = ip
		}
	}
	if publicIP != "" {
		ip := netip.MustParseAddr(publicIP) // checked by Validate
		if ip.Is4() {
			u.publicV4 = ip
		} else {
			u.publicV6 = ip
		}
	}
	return u, nil
}

func pickLink(iface string) (netlink.Link, error) {
	if iface == "" {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("reading routes: %w", err)
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.LinkIndex > 0 {
				return netlink.LinkByIndex(r.LinkIndex)
			}
		}
		return nil, errors.New("no default route to find the overlay's interface by; pass --iface")
	}
	if ip, err := netip.ParseAddr(iface); err == nil {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("listing links: %w", err)
		}
		for _, l := range links {
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
			for _, a := range addrs {
				if a.IP.Equal(net.IP(ip.AsSlice())) {
					return l, nil
				}
			}
		}
		return nil, fmt.Errorf("--iface %s: no interface has that address", iface)
	}
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("--iface %s: %w", iface, err)
	}
	return l, nil
}
