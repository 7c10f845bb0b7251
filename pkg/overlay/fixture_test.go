package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// node is a node namespace on the test underlay with one pod namespace
// behind it; addresses are per family, index 0 IPv4 and 1 IPv6.
type node struct {
	ns, pod *netnstest.NS
	public  [2]netip.Addr   // eth0's address on the underlay
	subnet  [2]netip.Prefix // the node's pod subnet
	podIP   [2]netip.Addr
	devs    [2]*Device
}

func (n *node) cfg(fam int) DeviceConfig {
	return DeviceConfig{
		Underlay: "eth0", LocalIP: n.public[fam], Subnet: n.subnet[fam],
		MAC: MACFromID(fmt.Sprintf("%s/%d", n.ns.Name, fam)), Log: quiet,
	}
}

// peer is the node as the others see it through its lease.
func (n *node) peer(fam int) Peer {
	return Peer{Subnet: n.subnet[fam], PublicIP: n.public[fam], VtepMAC: n.cfg(fam).MAC}
}

// newCluster builds count nodes whose eth0 hangs on a bridge in an underlay
// namespace (192.168.50.0/24, fd00:50::/64), node i owning 10.244.i.0/24 and
// fd00:244:i::/64, with a pod at .2 / ::2 behind a veth and forwarding on.
// Every namespace is deleted when the test ends.
func newCluster(t testing.TB, count int) []*node {
	t.Helper()
	under := newNS(t, "vx-under")
	under.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	under.Run(t, "ip", "link", "set", "br0", "up")
	nodes := make([]*node, count)
	for i := range nodes {
		n := &node{ns: newNS(t, "vx-node"), pod: newNS(t, "vx-pod")}
		id := i + 1
		n.public = [2]netip.Addr{netip.MustParseAddr(fmt.Sprintf("192.168.50.%d", id)), netip.MustParseAddr(fmt.Sprintf("fd00:50::%d", id))}
		n.subnet = [2]netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", id)), netip.MustParsePrefix(fmt.Sprintf("fd00:244:%d::/64", id))}
		n.podIP = [2]netip.Addr{n.subnet[0].Addr().Next().Next(), n.subnet[1].Addr().Next().Next()}
		port := fmt.Sprintf("u%d", id)
		under.Run(t, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.ns.Name)
		under.Run(t, "ip", "link", "set", port, "master", "br0", "up")
		n.ns.Run(t, "ip", "link", "set", "eth0", "up")
		n.ns.Run(t, "ip", "addr", "add", n.public[0].String()+"/24", "dev", "eth0")
		n.ns.Run(t, "ip", "addr", "add", n.public[1].String()+"/64", "dev", "eth0")
		n.ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
		n.ns.Run(t, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", n.pod.Name)
		n.ns.Run(t, "ip", "link", "set", "veth0", "up")
		n.pod.Run(t, "ip", "link", "set", "eth0", "up")
		for fam, bits := range []int{24, 64} {
			gw := n.subnet[fam].Addr().Next()
			n.ns.Run(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", gw, bits), "dev", "veth0")
			n.pod.Run(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", n.podIP[fam], bits), "dev", "eth0")
			n.pod.Run(t, "ip", "route", "add", "default", "via", gw.String())
		}
		nodes[i] = n
	}
	return nodes
}

// newNS makes a namespace whose links skip IPv6 duplicate address detection:
// until it ends, even link-local addresses are tentative and neighbour
// discovery through a new veth stalls for seconds.
func newNS(t testing.TB, prefix string) *netnstest.NS {
	ns := netnstest.New(t, prefix)
	ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	return ns
}

// ensure creates node n's device of family fam.
func (n *node) ensure(t testing.TB, cfg DeviceConfig) *Device {
	t.Helper()
	var d *Device
	n.ns.Do(t, func() (err error) {
		d, err = EnsureDevice(cfg)
		return err
	})
	return d
}

// reconcile programs the other nodes as n's peers of family fam.
func (n *node) reconcile(t testing.TB, d *Device, peers []Peer) Stats {
	t.Helper()
	var s Stats
	n.ns.Do(t, func() (err error) {
		s, err = d.Reconcile(peers)
		return err
	})
	return s
}

func peersOf(nodes []*node, self *node, fam int) []Peer {
	var ps []Peer
	for _, o := range nodes {
		if o != self {
			ps = append(ps, o.peer(fam))
		}
	}
	return ps
}

// pingAll pings every other node's pod from every pod.
func pingAll(t *testing.T, nodes []*node, fam int) {
	t.Helper()
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				ping(t, a.pod, b.podIP[fam])
			}
		}
	}
}

func ping(t *testing.T, from *netnstest.NS, to netip.Addr) {
	t.Helper()
	if out, err := from.Try("ping", "-c", "1", "-W", "2", to.String()); err != nil {
		t.Errorf("ping %s from %s: %v\n%s", to, from.Name, err, out)
	}
}

// has fails unless out contains every want.
func has(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// nexthopRoute fails unless ns routes dst through a nexthop object of ours
// (protocol 83) whose gateway is gw on dev, onlink, and the kernel's lookup
// of an address in dst goes there; it returns the nexthop's id. It reads the
// nexthop itself, so that it holds whatever net.ipv4.nexthop_compat_mode
// lets the route dump show.
func nexthopRoute(t *testing.T, ns *netnstest.NS, dst, gw, dev string) string {
	t.Helper()
	f := strings.Fields(ns.Run(t, "ip", "route", "show", "exact", dst))
	i := slices.Index(f, "nhid")
	if i < 0 || i+1 == len(f) || !slices.Contains(f, "83") {
		t.Errorf("route to %s is not on a nexthop object of protocol 83: %q", dst, f)
		return ""
	}
	id := f[i+1]
	has(t, "nexthop "+id, ns.Run(t, "ip", "nexthop", "show", "id", id), "via "+gw+" dev "+dev+" scope link proto 83 onlink")
	in := netip.MustParsePrefix(dst).Addr().Next().Next()
	has(t, "route lookup", ns.Run(t, "ip", "route", "get", in.String()), " via "+gw+" dev "+dev+" ")
	return id
}
