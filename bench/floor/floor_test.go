package main

import (
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"bridge", []string{"add", "-kind", "bridge", "-link", "cni0", "-mtu", "1450", "-hairpin", "-addr", "10.244.1.2/24", "-gw", "10.244.1.1", "-route", "0.0.0.0/0", "/run/netns/p"}, true},
		{"macvlan", []string{"add", "-kind", "macvlan", "-link", "ulink0", "-addr", "10.245.1.2/24", "/run/netns/p"}, true},
		{"del", []string{"del", "/run/netns/p"}, true},
		{"nothing", nil, false},
		{"no netns", []string{"del"}, false},
		{"two netns", []string{"del", "/a", "/b"}, false},
		{"unknown verb", []string{"check", "/run/netns/p"}, false},
		{"unknown kind", []string{"add", "-kind", "ptp", "-link", "x", "-addr", "10.0.0.2/24", "/p"}, false},
		{"no link", []string{"add", "-kind", "bridge", "-addr", "10.0.0.2/24", "/p"}, false},
		{"no addr", []string{"add", "-kind", "bridge", "-link", "cni0", "/p"}, false},
		{"bad addr", []string{"add", "-kind", "bridge", "-link", "cni0", "-addr", "10.0.0.2", "/p"}, false},
		{"route without gw", []string{"add", "-kind", "bridge", "-link", "cni0", "-addr", "10.0.0.2/24", "-route", "0.0.0.0/0", "/p"}, false},
		{"unknown flag", []string{"add", "-vlan", "3", "/p"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(tc.args)
			if (err == nil) != tc.ok {
				t.Fatalf("parse(%q) = %v, want ok %v", tc.args, err, tc.ok)
			}
			if err != nil && !errors.Is(err, errUsage) {
				t.Errorf("the error does not say how to call floor: %v", err)
			}
		})
	}
}

// TestFloor runs ADD and DEL of both kinds between a node and a pod
// namespace and checks the pod's interface, its address and routes, and the
// bridge port, then that DEL leaves neither end behind.
func TestFloor(t *testing.T) {
	for _, tc := range []struct {
		kind, link, addr string
		setup            [][]string
		flags            []string
		mtu              int
		routes           int // via the gateway
	}{
		{"bridge", "cni0", "10.244.1.7/24",
			[][]string{{"ip", "link", "add", "cni0", "type", "bridge"}, {"ip", "addr", "add", "10.244.1.1/24", "dev", "cni0"}, {"ip", "link", "set", "cni0", "up"}},
			[]string{"-mtu", "1450", "-hairpin", "-gw", "10.244.1.1", "-route", "0.0.0.0/0", "-route", "10.244.0.0/16"}, 1450, 2},
		{"macvlan", "ulink0", "10.245.1.7/24",
			[][]string{{"ip", "link", "add", "ulink0", "type", "veth", "peer", "name", "ulink0p"}, {"ip", "link", "set", "ulink0", "up"}},
			nil, 1500, 0},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			node := netnstest.New(t, "floor-node")
			pod := netnstest.New(t, "floor-pod")
			for _, s := range tc.setup {
				node.Run(t, s...)
			}
			before := node.Links(t)
			args := append([]string{"add", "-kind", tc.kind, "-link", tc.link, "-addr", tc.addr}, tc.flags...)
			node.Do(t, func() error { return run(append(args, pod.Path)) })
			checkPod(t, pod, tc.addr, tc.mtu, tc.routes)
			if tc.kind == "bridge" {
				checkPort(t, node, pod.Path)
			}
			node.Do(t, func() error { return run([]string{"del", pod.Path}) })
			if got := pod.Links(t); !slices.Equal(got, []string{"lo"}) {
				t.Errorf("after del the pod has %v, want lo alone", got)
			}
			if got := node.Links(t); !slices.Equal(got, before) {
				t.Errorf("after del the node has %v, want %v as before add", got, before)
			}
		})
	}
}

// checkPod checks eth0: up, its MTU, the address, the routes via the
// gateway.
func checkPod(t *testing.T, pod *netnstest.NS, addr string, mtu, routes int) {
	t.Helper()
	pod.Do(t, func() error {
		l, err := netlink.LinkByName(podIf)
		if err != nil {
			return err
		}
		if l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().MTU != mtu {
			t.Errorf("eth0 flags %v MTU %d, want up and %d", l.Attrs().Flags, l.Attrs().MTU, mtu)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != addr {
			t.Errorf("eth0 addresses %v, want %s alone", addrs, addr)
		}
		rs, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		via := 0
		for _, r := range rs {
			if r.Gw != nil {
				via++
			}
		}
		if via != routes {
			t.Errorf("%d routes via a gateway (%v), want %d", via, rs, routes)
		}
		return nil
	})
}

// checkPort checks the veth's node end: on cni0, up, hairpin.
func checkPort(t *testing.T, node *netnstest.NS, podPath string) {
	t.Helper()
	node.Do(t, func() error {
		br, err := netlink.LinkByName("cni0")
		if err != nil {
			return err
		}
		l, err := netlink.LinkByName(hostName(podPath))
		if err != nil {
			return err
		}
		if l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("node end master %d flags %v, want cni0 (%d) and up", l.Attrs().MasterIndex, l.Attrs().Flags, br.Attrs().Index)
		}
		pi, err := netlink.LinkGetProtinfo(l)
		if err != nil {
			return err
		}
		if !pi.Hairpin {
			t.Errorf("node end port info %+v, want hairpin", pi)
		}
		return nil
	})
}
