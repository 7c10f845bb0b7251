package ptp

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	netnstest "github.com/cnisuite/cni/test/netns"
)

var dual = []string{"10.1.1.0/24", "fd00:1::/64"}

// TestPodsReachNodeAndEachOther is what ptp is for: two pods on one node,
// each with a /24 and a /64, reach the host side's gateway and each other
// only through the node's routes (no bridge: each packet crosses the
// node's routing table); with ipMasq the node masquerades them while they
// exist and not after DEL.
func TestPodsReachNodeAndEachOther(t *testing.T) {
	n := newNode(t)
	conf := n.conf(map[string]any{"ipMasq": true, "ipMasqBackend": "iptables"}, dual...)
	pods := []*netnstest.NS{netnstest.New(t, "ptp-pod"), netnstest.New(t, "ptp-pod")}
	var res []*current.Result
	for i, pod := range pods {
		res = append(res, n.mustAdd(n.call(pod, []string{"a", "b"}[i], conf)))
	}
	contains(t, "pod routes", pods[0].Run(t, "ip", "-4", "route"),
		"10.1.1.0/24 via 10.1.1.1 dev eth0 src 10.1.1.2", "10.1.1.1 dev eth0 scope link src 10.1.1.2")
	contains(t, "pod IPv6 routes", pods[0].Run(t, "ip", "-6", "route"), "fd00:1::/64 via fd00:1::1 dev eth0", "fd00:1::1 dev eth0")
	if out := pods[0].Run(t, "ip", "-4", "route"); strings.Contains(out, "proto kernel") {
		t.Errorf("the kernel's subnet route is still there:\n%s", out)
	}
	hostVeth := res[0].Interfaces[idxHost].Name
	contains(t, "host veth", n.ns.Run(t, "ip", "addr", "show", hostVeth), "inet 10.1.1.1/32", "inet6 fd00:1::1/128")
	contains(t, "node routes", n.ns.Run(t, "ip", "route"), "10.1.1.2 dev "+hostVeth+" scope link")
	for i, pod := range pods {
		ping(t, pod, "10.1.1.1")
		ping(t, pod, "fd00:1::1")
		for _, ipc := range res[1-i].IPs {
			ping(t, pod, ipc.Address.IP.String())
		}
	}
	contains(t, "masquerade", n.masqRules(), "-s 10.1.1.2/32", "-s fd00:1::3/128", "-d 10.1.1.0/24", "MASQUERADE")
	for i, pod := range pods {
		n.must(n.del(n.call(pod, []string{"a", "b"}[i], conf)), "DEL")
	}
	n.assertClean()
}

// keyCases are every key of the reference's ptp, each through ADD, CHECK,
// DEL, DEL.
var keyCases = []struct {
	name    string
	over    map[string]any
	subnets []string
	verify  func(t *testing.T, n *node, pod *netnstest.NS, res *current.Result)
}{
	{name: "defaults, IPv4", subnets: dual[:1], verify: func(t *testing.T, n *node, pod *netnstest.NS, res *current.Result) {
		if r := n.masqRules(); r != "" {
			t.Errorf("masquerade rules without ipMasq:\n%s", r)
		}
		contains(t, "forwarding", n.ns.Run(t, "sysctl", "net.ipv4.ip_forward"), "= 1")
	}},
	{name: "IPv6 only", subnets: dual[1:], verify: func(t *testing.T, n *node, pod *netnstest.NS, res *current.Result) {
		contains(t, "forwarding", n.ns.Run(t, "sysctl", "net.ipv6.conf.all.forwarding"), "= 1")
		if out := pod.Run(t, "ip", "-6", "addr", "show", "eth0"); strings.Contains(out, "tentative") {
			t.Errorf("ADD returned with a tentative address:\n%s", out)
		}
	}},
	{name: "mtu", over: map[string]any{"mtu": 1400}, subnets: dual, verify: func(t *testing.T, n *node, pod *netnstest.NS, res *current.Result) {
		contains(t, "pod", pod.Run(t, "ip", "link", "show", "eth0"), "mtu 1400")
		contains(t, "host", n.ns.Run(t, "ip", "link", "show", res.Interfaces[idxHost].Name), "mtu 1400")
	}},
	{name: "ipMasq, iptables", over: map[string]any{"ipMasq": true, "ipMasqBackend": "iptables"}, subnets: dual, verify: func(t *testing.T, n *node, pod *netnstest.NS, res *current.Result) {
		contains(t, "rules", n.masqRules(), "-A POSTROUTING -s 10.1.1.2/32", "-A POSTROUTING -s fd00:1::2/128")
	}},
	{name: "ipMasq, nftables", over: map[string]any{"ipMasq": true, "ipMasqBackend": "nftables"}, subnets: dual, verify: func(t *testing.T, n *node, pod *netnstest.NS, res *current.Result) {
		contains(t, "rules", n.masqRules(), "ip saddr 10.1.1.2", "ip6 saddr fd00:1::2", "masquerade")
	}},
	{name: "dns", over: map[string]any{"dns": map[string]any{"nameservers": []string{"10.96.0.10"}, "search": []string{"svc.cluster.local"}}}, subnets: dual[:1],
		verify: func(t *testing.T, n *node, pod *netnstest.NS, res *current.Result) {
			if len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != "10.96.0.10" || res.DNS.Search[0] != "svc.cluster.local" {
				t.Errorf("result DNS %+v", res.DNS)
			}
		}},
	{name: "static IPAM", over: map[string]any{"ipam": map[string]any{"type": "static", "addresses": []map[string]string{{"address": "10.9.0.7/24", "gateway": "10.9.0.1"}},
		"routes": []map[string]string{{"dst": "0.0.0.0/0"}}}}, verify: func(t *testing.T, n *node, pod *netnstest.NS, res *current.Result) {
		contains(t, "pod routes", pod.Run(t, "ip", "route"), "default via 10.9.0.1", "10.9.0.0/24 via 10.9.0.1")
		ping(t, pod, "10.9.0.1")
	}},
}

func TestEveryKey(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, tc := range keyCases {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			pod := netnstest.New(t, "ptp-pod")
			a := n.call(pod, "c1", n.conf(tc.over, tc.subnets...))
			res := n.mustAdd(a)
			if len(res.Interfaces) != 2 || res.Interfaces[idxContainer].Sandbox != pod.Path || res.Interfaces[idxHost].Sandbox != "" {
				t.Fatalf("result interfaces: %+v", res.Interfaces)
			}
			for _, ipc := range res.IPs {
				if ipc.Interface == nil || *ipc.Interface != idxContainer {
					t.Errorf("IP %v not on the container interface", ipc.Address)
				}
			}
			tc.verify(t, n, pod, res)
			n.must(n.check(a, res), "CHECK")
			n.delTwice(a)
			n.assertClean()
		})
	}
}

// TestDelAfterNetnsGone: with the pod's namespace deleted, DEL (twice,
// and once without CNI_NETNS) releases the address and removes the
// masquerade rules of both families, which the reference's DEL leaves,
// and creates nothing at the old path.
func TestDelAfterNetnsGone(t *testing.T) {
	for _, backend := range []string{"iptables", "nftables"} {
		t.Run(backend, func(t *testing.T) {
			n := newNode(t)
			pod := netnstest.New(t, "ptp-pod")
			conf := n.conf(map[string]any{"ipMasq": true, "ipMasqBackend": backend}, dual...)
			a := n.call(pod, "c1", conf)
			n.mustAdd(a)
			if n.masqRules() == "" {
				t.Fatal("no masquerade rule after ADD")
			}
			pod.Delete(t)
			n.delTwice(a)
			n.must(n.del(n.call(nil, "c1", conf)), "DEL without CNI_NETNS")
			if !gone(pod.Path) {
				t.Errorf("DEL created %s", pod.Path)
			}
			n.assertClean()
		})
	}
}

// TestFailedAddLeavesNothing: an ADD that fails after the veth and the
// reservation exist takes both back (and the rules when it got that far).
func TestFailedAddLeavesNothing(t *testing.T) {
	cases := []struct {
		name  string
		over  map[string]any
		nets  []string
		setup func(t *testing.T, n *node, pod *netnstest.NS)
		path  []string // the only programs in PATH during ADD; nil: PATH as it is
		code  uint
		want  string
	}{
		{name: "MTU too small for IPv6, after IPAM", over: map[string]any{"mtu": 1000}, nets: dual, code: 7, want: "below 1280"},
		{name: "ifname taken in the pod", nets: dual, code: 4, want: `"eth0"`, setup: func(t *testing.T, n *node, pod *netnstest.NS) {
			pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
		}},
		{name: "no gateway from IPAM, after IPAM", over: map[string]any{"ipam": map[string]any{"type": "static", "addresses": []map[string]string{{"address": "10.9.0.7/24"}}}},
			code: 7, want: "gateway"},
		// IPv4's rules are made, then IPv6's cannot be: the undo removes the former.
		{name: "masquerading fails half-way, after everything else", over: map[string]any{"ipMasq": true, "ipMasqBackend": "iptables"}, nets: dual,
			want: "ip6tables-save", path: []string{"iptables-save", "iptables-restore"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			pod := netnstest.New(t, "ptp-pod")
			if tc.setup != nil {
				tc.setup(t, n, pod)
			}
			before := pod.Links(t)
			restore := onlyInPath(t, tc.path...)
			_, err := n.add(n.call(pod, "c1", n.conf(tc.over, tc.nets...)))
			restore()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ADD: %v, want an error with %q", err, tc.want)
			}
			if got := cniplugin.ToCNIError(err).Code; tc.code != 0 && got != tc.code {
				t.Errorf("code %d, want %d: %v", got, tc.code, err)
			}
			if after := pod.Links(t); !slices.Equal(after, before) {
				t.Errorf("the pod's links were %v before ADD, %v after", before, after)
			}
			n.assertClean()
		})
	}
}

// TestSpecVersions: the result converts to every spec version a runtime
// may ask for, the container interface indexed in the IPs from 0.3.1 on.
func TestSpecVersions(t *testing.T) {
	n := newNode(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		pod := netnstest.New(t, "ptp-pod")
		a := n.call(pod, "c-"+v, n.conf(map[string]any{"cniVersion": v}, dual[:1]...))
		res := n.mustAdd(a)
		var out bytes.Buffer
		if err := cniplugin.PrintResult(&out, res, v); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		contains(t, v, out.String(), `"cniVersion": "`+v+`"`, `"interface": 1`, `"gateway": "10.1.1.1"`)
		if hasVersion := strings.Contains(out.String(), `"version": "4"`); hasVersion != (v == "0.3.1" || v == "0.4.0") {
			t.Errorf("%s: per-IP version field present %v:\n%s", v, hasVersion, out.String())
		}
		if v != "0.3.1" { // CHECK came with 0.4.0
			n.must(n.check(a, res), "CHECK "+v)
		}
		n.must(n.del(a), "DEL "+v)
	}
	n.assertClean()
}

// TestCheckDetectsDrift: CHECK fails once ptp's layout is broken, in the
// pod or on the node, and passes again once it is restored.
func TestCheckDetectsDrift(t *testing.T) {
	n := newNode(t)
	pod := netnstest.New(t, "ptp-pod")
	a := n.call(pod, "c1", n.conf(nil, dual[:1]...))
	res := n.mustAdd(a)
	host := res.Interfaces[idxHost].Name
	steps := []struct{ name, want, breakIt, fixIt string }{
		{"subnet route", "10.1.1.0/24", "ip route del 10.1.1.0/24", "ip route add 10.1.1.0/24 via 10.1.1.1 src 10.1.1.2"},
		// The kernel drops the node's route with the address it went out from.
		{"gateway address", "lacks gateway", "node:ip addr del 10.1.1.1/32 dev " + host,
			"node:ip addr add 10.1.1.1/32 dev " + host + ";node:ip route replace 10.1.1.2 dev " + host + " scope link"},
		{"host route", "no route to 10.1.1.2", "node:ip route del 10.1.1.2 dev " + host, "node:ip route add 10.1.1.2 dev " + host + " scope link"},
	}
	sh := func(cmds string) {
		for _, cmd := range strings.Split(cmds, ";") {
			if c, ok := strings.CutPrefix(cmd, "node:"); ok {
				n.ns.Run(t, strings.Fields(c)...)
			} else {
				pod.Run(t, strings.Fields(cmd)...)
			}
		}
	}
	for _, s := range steps {
		sh(s.breakIt)
		if err := n.check(a, res); err == nil || !strings.Contains(err.Error(), s.want) {
			t.Errorf("%s broken: CHECK = %v, want an error with %q", s.name, err, s.want)
		}
		sh(s.fixIt)
		if err := n.check(a, res); err != nil {
			t.Fatalf("%s restored: CHECK = %v", s.name, err)
		}
	}
	n.must(n.del(a), "DEL")
	if err := n.check(a, res); err == nil {
		t.Error("CHECK passed after DEL")
	}
	n.assertClean()
}

func TestLoadConf(t *testing.T) {
	base := `"cniVersion":"1.1.0","name":"n","type":"ptp","ipam":{"type":"host-local"}`
	cases := []struct {
		name, conf string
		code       uint // 0: valid
	}{
		{"defaults", `{` + base + `}`, 0},
		{"unknown backend without ipMasq, as the reference", `{` + base + `,"ipMasqBackend":"ipfw"}`, 0},
		{"unknown backend", `{` + base + `,"ipMasq":true,"ipMasqBackend":"ipfw"}`, netconf.CodeUnsupportedField},
		{"no ipam", `{"cniVersion":"1.1.0","name":"n","type":"ptp"}`, netconf.CodeInvalidConfig},
		{"mtu too small", `{` + base + `,"mtu":20}`, netconf.CodeInvalidConfig},
		{"mtu too large", `{` + base + `,"mtu":70000}`, netconf.CodeInvalidConfig},
		{"no name", `{"cniVersion":"1.1.0","type":"ptp","ipam":{"type":"host-local"}}`, netconf.CodeInvalidConfig},
		{"not JSON", `{`, netconf.CodeDecoding},
		{"wrong type", `{` + base + `,"ipMasq":"yes"}`, netconf.CodeDecoding},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConf([]byte(tc.conf), "")
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || cniplugin.ToCNIError(err).Code != tc.code {
				t.Fatalf("loadConf: %v, want code %d", err, tc.code)
			}
		})
	}
}

// onlyInPath points PATH at a directory holding only the named programs
// of the machine, until the returned restore; none named leaves PATH.
func onlyInPath(t *testing.T, progs ...string) (restore func()) {
	if progs == nil {
		return func() {}
	}
	dir := t.TempDir()
	for _, p := range progs {
		real, err := exec.LookPath(p)
		if err != nil {
			t.Skipf("%s: %v", p, err)
		}
		if err := os.Symlink(real, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	old := os.Getenv("PATH")
	os.Setenv("PATH", dir)
	return func() { os.Setenv("PATH", old) }
}
