package subnetd

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// underlayIn runs findUnderlay for a command line inside node.
func underlayIn(t *testing.T, node *netnstest.NS, args ...string) (u underlay, err error) {
	t.Helper()
	c, err := parse(t, args, nil)
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	node.Do(t, func() error {
		u, err = findUnderlay(c, slog.New(slog.NewTextHandler(io.Discard, nil)))
		return nil
	})
	return u, err
}

// TestChooseInterface: the overlay's interface is chosen as flanneld does:
// --iface (names or addresses, in order), then --iface-regex (addresses,
// then names), then --iface-can-reach; without them the interface of
// --public-ip, else of the IPv4 default route, else of the IPv6 one. The
// address that chose the interface is its public one.
func TestChooseInterface(t *testing.T) {
	node := netnstest.New(t, "sd-iface")
	for _, l := range []struct{ name, addr string }{
		{"eth0", "192.168.50.2/24"}, {"eth0", "2001:db8:50::2/64"},
		{"ens5", "10.30.0.2/24"}, {"ens5", "10.30.0.9/24"},
		{"wan0", "fd00:77::2/64"},
	} {
		if _, err := node.Try("ip", "link", "show", l.name); err != nil {
			node.Run(t, "ip", "link", "add", l.name, "type", "veth", "peer", "name", l.name+"p")
			node.Run(t, "ip", "link", "set", l.name, "up")
			node.Run(t, "ip", "link", "set", l.name+"p", "up")
		}
		node.Run(t, "ip", "addr", "add", l.addr, "dev", l.name, "nodad")
	}
	node.Run(t, "ip", "route", "add", "172.16.0.0/16", "via", "192.168.50.1", "dev", "eth0")

	// An IPv6-only node: its only default route is IPv6.
	node.Run(t, "ip", "-6", "route", "add", "default", "via", "fd00:77::1", "dev", "wan0")
	u, err := underlayIn(t, node)
	if err != nil || u.name != "wan0" || u.public[family.IPv6] != netip.MustParseAddr("fd00:77::2") || u.public[family.IPv4].IsValid() {
		t.Fatalf("IPv6 default route only: %+v, %v; want wan0 at fd00:77::2", u, err)
	}
	node.Run(t, "ip", "route", "add", "default", "via", "10.30.0.1", "dev", "ens5")

	for _, tc := range []struct {
		args       []string
		name, v4   string
		v6, errMsg string
	}{
		{args: nil, name: "ens5", v4: "10.30.0.2"}, // the IPv4 default route first
		{args: []string{"--public-ip=192.168.50.2"}, name: "eth0", v4: "192.168.50.2", v6: "2001:db8:50::2"},
		{args: []string{"--iface=eth0", "--public-ipv6=2001:db8:99::1"}, name: "eth0", v4: "192.168.50.2", v6: "2001:db8:99::1"},
		{args: []string{"--iface=missing0", "--iface=10.30.0.9"}, name: "ens5", v4: "10.30.0.9"},
		{args: []string{"--iface=2001:db8:50::2"}, name: "eth0", v4: "192.168.50.2", v6: "2001:db8:50::2"},
		{args: []string{"--iface-regex=^eth", "--iface=ens5"}, name: "ens5", v4: "10.30.0.2"}, // --iface before any regex
		{args: []string{`--iface-regex=^10\.30\.0\.9$`}, name: "ens5", v4: "10.30.0.9"},
		{args: []string{"--iface-regex=^nothing$", "--iface-regex=^eth.$"}, name: "eth0", v4: "192.168.50.2", v6: "2001:db8:50::2"},
		{args: []string{"--iface-regex=^fd00:77:"}, name: "wan0", v6: "fd00:77::2"},
		{args: []string{"--iface-can-reach=172.16.5.5"}, name: "eth0", v4: "192.168.50.2", v6: "2001:db8:50::2"},
		{args: []string{"--iface-regex=^nothing$", "--iface-can-reach=8.8.8.8"}, name: "ens5", v4: "10.30.0.2"},
		{args: []string{"--iface=missing0", "--iface-regex=^nothing$"}, errMsg: "--iface-regex ^nothing$ matches no"},
	} {
		u, err := underlayIn(t, node, tc.args...)
		if tc.errMsg != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errMsg) || !strings.Contains(err.Error(), "missing0") {
				t.Errorf("%q: %+v, %v; want an error saying %q and naming missing0", tc.args, u, err, tc.errMsg)
			}
			continue
		}
		if err != nil || u.name != tc.name || addrString(u.public[family.IPv4]) != tc.v4 || addrString(u.public[family.IPv6]) != tc.v6 {
			t.Errorf("%q: %s at %s and %s (%v); want %s at %q and %q", tc.args, u.name, u.public[family.IPv4], u.public[family.IPv6], err, tc.name, tc.v4, tc.v6)
		}
	}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
