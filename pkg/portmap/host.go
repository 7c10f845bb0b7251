package portmap

import (
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netfilter/hostport"
)

// localnetRouting sets route_localnet on the interface that routes to the
// container's IPv4 address (the bridge), as the reference does: traffic
// from 127.0.0.1 to a host port is DNATed to the pod and must be allowed
// to leave through it before it is masqueraded.
func localnetRouting(c *hostport.Conf, addrs []netip.Prefix) error {
	name, ok := localnetIface(c, addrs)
	if !ok {
		return nil
	}
	if err := link.Sysctl(localnetKey(name), "1"); err != nil {
		return fmt.Errorf("enabling route_localnet on %q for localhost to host port traffic: %w", name, err)
	}
	return nil
}

// checkLocalnetRouting verifies what localnetRouting set.
func checkLocalnetRouting(c *hostport.Conf, addrs []netip.Prefix) error {
	name, ok := localnetIface(c, addrs)
	if !ok {
		return nil
	}
	v, err := os.ReadFile("/proc/sys/" + localnetKey(name))
	if err != nil {
		return fmt.Errorf("reading route_localnet of %q: %w", name, err)
	}
	if strings.TrimSpace(string(v)) != "1" {
		return fmt.Errorf("route_localnet is off on %q, so 127.0.0.1:<hostPort> does not reach the container; DEL and ADD the attachment again", name)
	}
	return nil
}

func localnetKey(iface string) string { return "net/ipv4/conf/" + iface + "/route_localnet" }

// localnetIface names the interface routing to the container's IPv4
// address when snat needs route_localnet; like the reference, no route
// means nothing to set.
func localnetIface(c *hostport.Conf, addrs []netip.Prefix) (string, bool) {
	if !c.SNAT {
		return "", false
	}
	for _, p := range addrs {
		if !p.Addr().Is4() {
			continue
		}
		routes, err := netlink.RouteGet(p.Addr().AsSlice())
		if err != nil || len(routes) == 0 {
			return "", false
		}
		l, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			return "", false
		}
		return l.Attrs().Name, true
	}
	return "", false
}
