// Command floor makes, for one pod, only the kernel calls that a
// bridge+host-local or a macvlan+host-local ADD must make, or the DEL's,
// with everything fixed by its arguments: no configuration to parse, no
// IPAM state, no result to print. The bench (make bench) execs it from the
// node's network namespace as a runtime execs a plugin, so its time is a
// floor for the plugins': a process start and the netlink round trips, on
// one route socket per namespace.
//
//	floor add -kind bridge -link BRIDGE [-mtu N] [-hairpin] -addr ADDR/LEN [-gw IP -route DST...] NETNS
//	floor add -kind macvlan -link MASTER [-mtu N] -addr ADDR/LEN [-gw IP -route DST...] NETNS
//	floor del NETNS
//
// bridge: a veth pair made with its peer in NETNS as eth0, the node end on
// BRIDGE and up. macvlan: a bridge-mode macvlan on MASTER made in NETNS as
// eth0, up. Then, in NETNS, the address, eth0 up and the routes via the
// gateway. del deletes eth0, and with it the veth's node end.
package main

import (
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// podIf is the interface's name in the pod.
const podIf = "eth0"

// request is one invocation.
type request struct {
	add     bool
	kind    string // "bridge" or "macvlan"
	link    string // the bridge, or the macvlan's master, in the node
	mtu     int    // 0: the kernel's default
	hairpin bool
	addr    netip.Prefix
	gw      netip.Addr
	routes  []netip.Prefix
	netns   string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: floor add -kind bridge|macvlan -link NAME [-mtu N] [-hairpin] -addr ADDR/LEN [-gw IP -route DST...] NETNS, or floor del NETNS")

// parse reads the verb, the flags and the namespace's path.
func parse(args []string) (request, error) {
	var r request
	if len(args) == 0 {
		return r, errUsage
	}
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the errors carry the flag package's messages
	fs.StringVar(&r.kind, "kind", "", "bridge or macvlan")
	fs.StringVar(&r.link, "link", "", "the bridge or the master")
	fs.IntVar(&r.mtu, "mtu", 0, "the pod interface's MTU")
	fs.BoolVar(&r.hairpin, "hairpin", false, "hairpin mode on the bridge port")
	fs.Func("addr", "the pod's address", func(s string) (err error) { r.addr, err = netip.ParsePrefix(s); return err })
	fs.Func("gw", "the routes' gateway", func(s string) (err error) { r.gw, err = netip.ParseAddr(s); return err })
	fs.Func("route", "a destination routed via the gateway", func(s string) error {
		p, err := netip.ParsePrefix(s)
		if err == nil {
			r.routes = append(r.routes, p)
		}
		return err
	})
	if err := fs.Parse(args[1:]); err != nil {
		return r, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() != 1 {
		return r, errUsage
	}
	r.netns = fs.Arg(0)
	switch args[0] {
	case "del":
		return r, nil
	case "add":
		r.add = true
	default:
		return r, fmt.Errorf("%w: no verb %q", errUsage, args[0])
	}
	switch {
	case r.kind != "bridge" && r.kind != "macvlan":
		return r, fmt.Errorf("%w: -kind %q", errUsage, r.kind)
	case r.link == "" || !r.addr.IsValid():
		return r, fmt.Errorf("%w: add needs -link and -addr", errUsage)
	case len(r.routes) > 0 && !r.gw.IsValid():
		return r, fmt.Errorf("%w: -route needs -gw", errUsage)
	}
	return r, nil
}

func run(args []string) error {
	r, err := parse(args)
	if err != nil {
		return err
	}
	podNS, err := os.Open(r.netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	pod, err := netlink.NewHandleAt(netns.NsHandle(podNS.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("a route socket in %s: %w", r.netns, err)
	}
	defer pod.Close()
	if !r.add {
		if err := pod.LinkDel(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: podIf}}); err != nil {
			return fmt.Errorf("deleting %s in %s: %w", podIf, r.netns, err)
		}
		return nil
	}
	node, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("a route socket: %w", err)
	}
	defer node.Close()
	create := addVeth
	if r.kind == "macvlan" {
		create = addMacvlan
	}
	if err := create(node, r, netlink.NsFd(int(podNS.Fd()))); err != nil {
		return err
	}
	return configure(pod, r)
}

// addVeth makes the pair with its peer directly in the pod as eth0, both
// ends with the MTU, the node end up on the bridge.
func addVeth(node *netlink.Handle, r request, pod netlink.NsFd) error {
	br, err := node.LinkByName(r.link)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", r.link, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU, attrs.MasterIndex, attrs.Flags = hostName(r.netns), r.mtu, br.Attrs().Index, net.FlagUp
	v := netlink.NewVeth(attrs)
	v.PeerName, v.PeerNamespace = podIf, pod
	if err := node.LinkAdd(v); err != nil {
		return fmt.Errorf("creating veth %s: %w", attrs.Name, err)
	}
	if r.hairpin {
		if err := node.LinkSetHairpin(v, true); err != nil {
			return fmt.Errorf("hairpin on %s: %w", attrs.Name, err)
		}
	}
	return nil
}

// addMacvlan makes the macvlan directly in the pod as eth0, up.
func addMacvlan(node *netlink.Handle, r request, pod netlink.NsFd) error {
	master, err := node.LinkByName(r.link)
	if err != nil {
		return fmt.Errorf("master %s: %w", r.link, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU, attrs.ParentIndex, attrs.Namespace, attrs.Flags = podIf, r.mtu, master.Attrs().Index, pod, net.FlagUp
	if err := node.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}); err != nil {
		return fmt.Errorf("creating the macvlan on %s: %w", r.link, err)
	}
	return nil
}

// configure gives eth0 its address, brings it up if it is not yet (a veth
// peer cannot be made up) and adds the routes.
func configure(pod *netlink.Handle, r request) error {
	l, err := pod.LinkByName(podIf)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", podIf, r.netns, err)
	}
	if err := pod.AddrAdd(l, &netlink.Addr{IPNet: ipNet(r.addr)}); err != nil {
		return fmt.Errorf("adding %s: %w", r.addr, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := pod.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting %s up: %w", podIf, err)
		}
	}
	for _, dst := range r.routes {
		if err := pod.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(dst), Gw: r.gw.AsSlice()}); err != nil {
			return fmt.Errorf("adding the route to %s via %s: %w", dst, r.gw, err)
		}
	}
	return nil
}

// hostName names the veth's node end after the pod's namespace, so that
// pods do not collide and no name needs a retry.
func hostName(netnsPath string) string {
	h := fnv.New32a()
	h.Write([]byte(netnsPath))
	return fmt.Sprintf("veth%08x", h.Sum32())
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
