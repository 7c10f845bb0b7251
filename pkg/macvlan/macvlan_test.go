package macvlan

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	netnstest "github.com/cnisuite/cni/test/netns"
)

type keyCase struct {
	name     string
	over     map[string]any
	ranges   []string
	ipamKeys map[string]any
	cniArgs  string
	// setup prepares the node or the pod before ADD and returns the links
	// it left in the pod, which outlive the attachment.
	setup func(t *testing.T, e *env, pod *netnstest.NS) []string
	// verify inspects the node and the pod after ADD.
	verify func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result)
}

var (
	v4   = []string{"10.1.0.0/24"}
	dual = []string{"10.1.0.0/24", "fd00:1::/64"}
)

// ifindex reads a link's index from `ip -o link show`.
func ifindex(t *testing.T, ns *netnstest.NS, name string) string {
	t.Helper()
	idx, _, _ := strings.Cut(ns.Run(t, "ip", "-o", "link", "show", name), ":")
	return idx
}

func podLink(t *testing.T, pod *netnstest.NS) string {
	t.Helper()
	return pod.Run(t, "ip", "-d", "link", "show", "eth0")
}

func wantMode(mode string) func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
	return func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "pod link", podLink(t, pod), "macvlan mode "+mode+" ")
	}
}

func wantMAC(mac string) func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
	return func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "pod link", podLink(t, pod), "link/ether "+mac)
		if res.Interfaces[0].Mac != mac {
			t.Errorf("result MAC %s, want %s", res.Interfaces[0].Mac, mac)
		}
	}
}

// podMaster adds a veth "pm0" to the pod, up, for linkInContainer.
func podMaster(t *testing.T, e *env, pod *netnstest.NS) []string {
	pod.Run(t, "ip", "link", "add", "pm0", "type", "veth", "peer", "name", "pm0p")
	pod.Run(t, "ip", "link", "set", "pm0", "up")
	pod.Run(t, "ip", "link", "set", "pm0p", "up")
	return []string{"pm0", "pm0p"}
}

// defaultVia gives ns an address on dev and a default route through it.
func defaultVia(t *testing.T, ns *netnstest.NS, dev string) {
	ns.Run(t, "ip", "addr", "add", "192.168.50.1/24", "dev", dev)
	ns.Run(t, "ip", "route", "add", "default", "via", "192.168.50.254", "dev", dev)
}

var keyCases = []keyCase{
	{name: "defaults", ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		l := podLink(t, pod)
		contains(t, "pod link", l, "eth0@if"+ifindex(t, e.node, master)+":", "link-netns "+e.node.Name, "macvlan mode bridge ", "state UP")
		contains(t, "pod addr", pod.Run(t, "ip", "addr", "show", "eth0"), "inet 10.1.0.2/24")
		if mac := strings.Fields(l[strings.Index(l, "link/ether"):])[1]; res.Interfaces[0].Mac != mac || res.Interfaces[0].Sandbox != pod.Path {
			t.Errorf("result interface %+v, pod has MAC %s", res.Interfaces[0], mac)
		}
		if len(res.IPs) != 1 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 0 {
			t.Errorf("result IPs %v", res.IPs)
		}
		contains(t, "sysctls", pod.Run(t, "sysctl", "net.ipv4.conf.eth0.arp_notify", "net.ipv6.conf.eth0.ndisc_notify"),
			"arp_notify = 1", "ndisc_notify = 1")
	}},
	{name: "mode private", over: map[string]any{"mode": "private"}, ranges: v4, verify: wantMode("private")},
	{name: "mode vepa", over: map[string]any{"mode": "vepa"}, ranges: v4, verify: wantMode("vepa")},
	{name: "mode passthru", over: map[string]any{"mode": "passthru"}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		wantMode("passthru")(t, e, pod, res)
		masterMAC := strings.Fields(e.node.Run(t, "cat", "/sys/class/net/"+master+"/address"))[0]
		wantMAC(masterMAC)(t, e, pod, res)
	}},
	{name: "mtu", over: map[string]any{"mtu": 1400}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "pod link", podLink(t, pod), "mtu 1400")
	}},
	{name: "bcqueuelen", over: map[string]any{"bcqueuelen": 2000}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "pod link", podLink(t, pod), "bcqueuelen 2000")
	}},
	{name: "mac key", over: map[string]any{"mac": "02:00:00:00:aa:04"}, ranges: v4, verify: wantMAC("02:00:00:00:aa:04")},
	{name: "mac from CNI_ARGS", over: map[string]any{"mac": "02:00:00:00:aa:04"}, cniArgs: "IgnoreUnknown=1;MAC=02:00:00:00:aa:01", ranges: v4, verify: wantMAC("02:00:00:00:aa:01")},
	{name: "mac from args.cni", over: map[string]any{"args": map[string]any{"cni": map[string]any{"mac": "02:00:00:00:aa:02"}}}, cniArgs: "MAC=02:00:00:00:aa:01", ranges: v4, verify: wantMAC("02:00:00:00:aa:02")},
	{name: "mac from runtimeConfig", over: map[string]any{"runtimeConfig": map[string]any{"mac": "02:00:00:00:aa:03"}}, cniArgs: "MAC=02:00:00:00:aa:01", ranges: v4, verify: wantMAC("02:00:00:00:aa:03")},
	{name: "dual-stack, DAD off", ranges: dual, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		addrs := pod.Run(t, "ip", "addr", "show", "eth0")
		contains(t, "pod addr", addrs, "inet 10.1.0.2/24", "inet6 fd00:1::2/64 scope global nodad") // never tentative
		contains(t, "accept_dad", pod.Run(t, "sysctl", "net.ipv6.conf.eth0.accept_dad"), "= 0")
		if strings.Contains(addrs, "tentative") || len(res.IPs) != 2 {
			t.Errorf("result IPs %v; pod:\n%s", res.IPs, addrs)
		}
	}},
	{name: "enabledad", over: map[string]any{"enabledad": true}, ranges: []string{"fd00:1::/64"}, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "accept_dad", pod.Run(t, "sysctl", "net.ipv6.conf.eth0.accept_dad"), "= 1")
		if out := pod.Run(t, "ip", "-6", "addr", "show", "eth0"); strings.Contains(out, "tentative") {
			t.Errorf("ADD returned before DAD settled:\n%s", out)
		}
	}},
	{name: "routes from IPAM", ranges: dual, ipamKeys: map[string]any{"routes": []map[string]string{{"dst": "0.0.0.0/0"}, {"dst": "::/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.254"}}},
		verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
			contains(t, "pod routes", pod.Run(t, "ip", "route"), "default via 10.1.0.1 dev eth0", "10.9.0.0/16 via 10.1.0.254 dev eth0")
			contains(t, "pod routes", pod.Run(t, "ip", "-6", "route"), "default via fd00:1::1 dev eth0")
		}},
	{name: "master from the node's default route", over: map[string]any{"master": nil}, ranges: v4,
		setup: func(t *testing.T, e *env, pod *netnstest.NS) []string {
			e.node.Run(t, "ip", "link", "add", "other0", "type", "veth", "peer", "name", "other0p")
			e.node.Run(t, "ip", "link", "set", "other0", "up")
			defaultVia(t, e.node, master)
			return nil
		},
		verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
			contains(t, "pod link", podLink(t, pod), "eth0@if"+ifindex(t, e.node, master)+":", "link-netns "+e.node.Name)
		}},
	{name: "linkInContainer", over: map[string]any{"linkInContainer": true, "master": "pm0"}, ranges: v4, setup: podMaster,
		verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
			l := podLink(t, pod)
			contains(t, "pod link", l, "eth0@pm0:", "macvlan mode bridge")
			if strings.Contains(l, "link-netns") {
				t.Errorf("master in another namespace:\n%s", l)
			}
		}},
	{name: "linkInContainer, master from the container's default route", over: map[string]any{"linkInContainer": true, "master": nil}, ranges: v4,
		setup: func(t *testing.T, e *env, pod *netnstest.NS) []string {
			keep := podMaster(t, e, pod)
			defaultVia(t, pod, "pm0")
			return keep
		},
		verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
			contains(t, "pod link", podLink(t, pod), "eth0@pm0:")
		}},
	{name: "L2 without IPAM", verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		if len(res.IPs) != 0 || len(res.Interfaces) != 1 {
			t.Errorf("L2 result %v", res)
		}
		contains(t, "pod link", podLink(t, pod), ",UP", "macvlan mode bridge")
		if out := pod.Run(t, "ip", "addr", "show", "eth0"); strings.Contains(out, "inet ") {
			t.Errorf("L2 attachment has an IPv4 address:\n%s", out)
		}
	}},
	{name: "dns of the configuration", over: map[string]any{"dns": map[string]any{"nameservers": []string{"10.1.0.53"}, "search": []string{"svc.local"}}}, ranges: v4,
		verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
			if len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != "10.1.0.53" || len(res.DNS.Search) != 1 {
				t.Errorf("result DNS %+v", res.DNS)
			}
		}},
}

// TestEveryKey runs ADD, CHECK and DEL (twice) for each key and checks
// that nothing but the pod's own links remains.
func TestEveryKey(t *testing.T) {
	for _, tc := range keyCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pod := netnstest.New(t, "mv-pod")
			var keep []string
			if tc.setup != nil {
				keep = tc.setup(t, e, pod)
			}
			conf := e.conf(tc.over, tc.ranges...)
			for k, v := range tc.ipamKeys {
				conf = withIPAMKey(t, conf, k, v)
			}
			a := e.args(pod, "c1", conf)
			a.Args = tc.cniArgs
			res := e.mustAdd(a)
			tc.verify(t, e, pod, res)
			if err := e.check(a, res); err != nil {
				t.Errorf("CHECK after ADD: %v", err)
			}
			for range 2 {
				if err := e.del(a); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			e.assertClean([]*netnstest.NS{pod}, keep...)
		})
	}
}

func withIPAMKey(t *testing.T, conf, key string, v any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(conf), &m); err != nil {
		t.Fatal(err)
	}
	ipam := m["ipam"].(map[string]any)
	ipam[key] = v
	return withKey(t, conf, "ipam", ipam)
}

// TestPodsReachEachOther: two pods in bridge mode on one master talk over
// IPv4 and IPv6 without the wire's help, with DAD off from the first packet.
func TestPodsReachEachOther(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(nil, dual...)
	var pods []*netnstest.NS
	var results []*current.Result
	for i := range 2 {
		pod := netnstest.New(t, "mv-pod")
		pods = append(pods, pod)
		results = append(results, e.mustAdd(e.args(pod, fmt.Sprint("c", i), conf)))
	}
	for i, pod := range pods {
		for _, ipc := range results[1-i].IPs {
			ping(t, pod, ipc.Address.IP.String())
		}
	}
	for i, pod := range pods {
		if err := e.del(e.args(pod, fmt.Sprint("c", i), conf)); err != nil {
			t.Fatal(err)
		}
	}
	e.assertClean(pods)
}

// TestL2PodsReachEachOther: without IPAM the link is up and carries
// whatever the pod configures itself.
func TestL2PodsReachEachOther(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(nil)
	a, b := netnstest.New(t, "mv-pod"), netnstest.New(t, "mv-pod")
	for i, pod := range []*netnstest.NS{a, b} {
		e.mustAdd(e.args(pod, fmt.Sprint("c", i), conf))
		pod.Run(t, "ip", "addr", "add", fmt.Sprintf("192.168.9.%d/24", i+1), "dev", "eth0")
	}
	ping(t, a, "192.168.9.2")
	for i, pod := range []*netnstest.NS{a, b} {
		if err := e.del(e.args(pod, fmt.Sprint("c", i), conf)); err != nil {
			t.Fatal(err)
		}
	}
	e.assertClean([]*netnstest.NS{a, b})
}

// TestModesOverHairpinSwitch: with a wire that reflects frames, vepa pods
// reach each other through it and private pods still do not; bridge pods
// never needed it.
func TestModesOverHairpinSwitch(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		reach bool
	}{{"bridge", true}, {"vepa", true}, {"private", false}} {
		t.Run(tc.mode, func(t *testing.T) {
			e := newEnv(t)
			e.hairpinSwitch()
			conf := e.conf(map[string]any{"mode": tc.mode}, v4...)
			a, b := netnstest.New(t, "mv-pod"), netnstest.New(t, "mv-pod")
			e.mustAdd(e.args(a, "ca", conf))
			resB := e.mustAdd(e.args(b, "cb", conf))
			to := resB.IPs[0].Address.IP.String()
			if tc.reach {
				ping(t, a, to)
			} else {
				unreachable(t, a, to)
			}
		})
	}
}
