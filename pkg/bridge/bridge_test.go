package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
	netnstest "github.com/cnisuite/cni/test/netns"
)

type keyCase struct {
	name    string
	over    map[string]any
	ranges  []string
	cniArgs string
	// verify inspects the node and the pod after ADD.
	verify func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result)
}

func contains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: want %q in:\n%s", what, w, out)
		}
	}
}

func hostVeth(res *current.Result) string { return res.Interfaces[idxHost].Name }

var v4 = []string{"10.244.1.0/24"}

var keyCases = []keyCase{
	{name: "defaults", ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "bridge port", e.node.Run(t, "ip", "-d", "link", "show", hostVeth(res)), "master cni0", "hairpin off")
		contains(t, "pod", pod.Run(t, "ip", "addr", "show", "eth0"), "10.244.1.2/24", "state UP")
		if out := e.node.Run(t, "ip", "addr", "show", "cni0"); strings.Contains(out, "10.244.1.1") {
			t.Errorf("gateway address without isGateway:\n%s", out)
		}
	}},
	{name: "isGateway", over: map[string]any{"isGateway": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "bridge", e.node.Run(t, "ip", "addr", "show", "cni0"), "10.244.1.1/24")
		contains(t, "forwarding", e.node.Run(t, "sysctl", "net.ipv4.ip_forward"), "= 1")
		if strings.Contains(pod.Run(t, "ip", "route"), "default") {
			t.Error("default route without isDefaultGateway")
		}
	}},
	{name: "isDefaultGateway", over: map[string]any{"isDefaultGateway": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "pod routes", pod.Run(t, "ip", "route"), "default via 10.244.1.1 dev eth0")
		contains(t, "bridge", e.node.Run(t, "ip", "addr", "show", "cni0"), "10.244.1.1/24")
	}},
	{name: "ipMasq", over: map[string]any{"ipMasq": true, "isGateway": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "nat", e.node.Run(t, "iptables-save", "-t", "nat"),
			`-A POSTROUTING -s 10.244.1.2/32 -m comment --comment "name: \"testnet\" id: \"c1\"" -j CNI-`, "-j MASQUERADE", "-d 10.244.1.0/24")
	}},
	{name: "ipMasqBackend iptables", over: map[string]any{"ipMasq": true, "ipMasqBackend": "iptables"}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "nat", e.node.Run(t, "iptables-save", "-t", "nat"), "-j MASQUERADE")
	}},
	{name: "ipMasqBackend nftables", over: map[string]any{"ipMasq": true, "ipMasqBackend": "nftables"}, ranges: []string{"10.244.1.0/24", "fd00:10::/64"}, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "nft", e.node.Run(t, "nft", "list", "table", "inet", "cni_plugins_masquerade"),
			"ip saddr 10.244.1.2 ip daddr != 10.244.1.0/24 masquerade comment", "ip6 saddr fd00:10::2 ip6 daddr != fd00:10::/64 masquerade comment",
			"net: testnet, if: eth0, id: c1", "goto masq_checks")
		if out := e.node.Run(t, "iptables-save", "-t", "nat"); strings.Contains(out, "CNI-") {
			t.Errorf("iptables rules with the nftables backend:\n%s", out)
		}
	}},
	{name: "mtu", over: map[string]any{"mtu": 1400}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "bridge", e.node.Run(t, "ip", "link", "show", "cni0"), "mtu 1400")
		contains(t, "host veth", e.node.Run(t, "ip", "link", "show", hostVeth(res)), "mtu 1400")
		contains(t, "pod", pod.Run(t, "ip", "link", "show", "eth0"), "mtu 1400")
	}},
	{name: "hairpinMode", over: map[string]any{"hairpinMode": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "port", e.node.Run(t, "ip", "-d", "link", "show", hostVeth(res)), "hairpin on")
	}},
	{name: "promiscMode", over: map[string]any{"promiscMode": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "bridge", e.node.Run(t, "ip", "link", "show", "cni0"), "PROMISC")
	}},
	{name: "portIsolation", over: map[string]any{"portIsolation": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "port", e.node.Run(t, "ip", "-d", "link", "show", hostVeth(res)), "isolated on")
	}},
	{name: "forceAddress", over: map[string]any{"forceAddress": true, "isGateway": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "bridge", e.node.Run(t, "ip", "addr", "show", "cni0"), "10.244.1.1/24")
	}},
	{name: "enabledad", over: map[string]any{"enabledad": true}, ranges: []string{"fd00:10::/64"}, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "accept_dad", pod.Run(t, "sysctl", "net.ipv6.conf.eth0.accept_dad"), "= 1")
		if out := pod.Run(t, "ip", "-6", "addr", "show", "eth0"); strings.Contains(out, "tentative") {
			t.Errorf("ADD returned before DAD settled:\n%s", out)
		}
	}},
	{name: "dad off by default", ranges: []string{"fd00:10::/64"}, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "accept_dad", pod.Run(t, "sysctl", "net.ipv6.conf.eth0.accept_dad"), "= 0")
		// nodad: the kernel never marks it tentative, not even until its
		// DAD work has run after the link came up.
		out := pod.Run(t, "ip", "-6", "addr", "show", "eth0")
		contains(t, "pod addr", out, "inet6 fd00:10::2/64 scope global nodad")
		if strings.Contains(out, "tentative") {
			t.Errorf("ADD returned with a tentative address:\n%s", out)
		}
	}},
	{name: "macspoofchk", over: map[string]any{"macspoofchk": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "nft", e.node.Run(t, "nft", "list", "table", "bridge", "nat"),
			`iifname "`+hostVeth(res)+`" jump cni-br-iface-c1-eth0`, "ether saddr "+res.Interfaces[idxContainer].Mac+" return", "drop")
	}},
	{name: "mac from CNI_ARGS", cniArgs: "IgnoreUnknown=1;MAC=02:00:00:00:aa:01", ranges: v4, verify: wantMAC("02:00:00:00:aa:01")},
	{name: "mac from args.cni", over: map[string]any{"args": map[string]any{"cni": map[string]any{"mac": "02:00:00:00:aa:02"}}}, cniArgs: "IgnoreUnknown=1;MAC=02:00:00:00:aa:01", ranges: v4, verify: wantMAC("02:00:00:00:aa:02")},
	{name: "mac from runtimeConfig", over: map[string]any{"runtimeConfig": map[string]any{"mac": "02:00:00:00:aa:03"}, "args": map[string]any{"cni": map[string]any{"mac": "02:00:00:00:aa:02"}}}, ranges: v4, verify: wantMAC("02:00:00:00:aa:03")},
	{name: "L2 without IPAM", verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		if len(res.IPs) != 0 {
			t.Errorf("L2 result has IPs: %v", res.IPs)
		}
		contains(t, "pod", pod.Run(t, "ip", "link", "show", "eth0"), "state UP")
	}},
	{name: "disableContainerInterface", over: map[string]any{"disableContainerInterface": true}, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		if out := pod.Run(t, "ip", "link", "show", "eth0"); strings.Contains(out, ",UP") {
			t.Errorf("container interface is up:\n%s", out)
		}
	}},
	{name: "vlan", over: map[string]any{"vlan": 100, "isGateway": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		vl := e.node.Run(t, "bridge", "vlan", "show", "dev", hostVeth(res))
		contains(t, "vlans", vl, "100 PVID Egress Untagged")
		if strings.Contains(vl, " 1 ") || strings.Contains(vl, "\t1 ") {
			t.Errorf("default VLAN 1 kept without preserveDefaultVlan:\n%s", vl)
		}
		contains(t, "vlan gateway", e.node.Run(t, "ip", "addr", "show", "cni0.100"), "10.244.1.1/24")
	}},
	{name: "vlanTrunk", over: map[string]any{"vlanTrunk": []map[string]int{{"minID": 10, "maxID": 12}, {"id": 20}}}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		vl := e.node.Run(t, "bridge", "vlan", "show", "dev", hostVeth(res))
		contains(t, "vlans", vl, "1 PVID Egress Untagged", "10", "11", "12", "20")
	}},
	{name: "preserveDefaultVlan", over: map[string]any{"vlan": 30, "preserveDefaultVlan": true}, ranges: v4, verify: func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		vl := e.node.Run(t, "bridge", "vlan", "show", "dev", hostVeth(res))
		contains(t, "vlans", vl, "30 PVID Egress Untagged", "1\n")
	}},
}

func wantMAC(mac string) func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
	return func(t *testing.T, e *env, pod *netnstest.NS, res *current.Result) {
		contains(t, "pod", pod.Run(t, "ip", "link", "show", "eth0"), "link/ether "+mac)
		if res.Interfaces[idxContainer].Mac != mac {
			t.Errorf("result MAC %s, want %s", res.Interfaces[idxContainer].Mac, mac)
		}
	}
}

// TestEveryKey runs each key through ADD, CHECK, DEL, DEL and requires a
// clean node afterwards.
func TestEveryKey(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, tc := range keyCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pod := netnstest.New(t, "br-pod")
			conf := e.conf(tc.over, tc.ranges...)
			a := e.args(pod, "c1", conf)
			a.Args = tc.cniArgs
			res, err := e.add(a)
			if errors.Is(err, syscall.EOPNOTSUPP) && (tc.over["vlan"] != nil || tc.over["vlanTrunk"] != nil) {
				t.Skipf("the kernel refuses bridge VLAN filtering: %v", err)
			}
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if len(res.Interfaces) < 3 || res.Interfaces[idxContainer].Sandbox != pod.Path || res.Interfaces[idxBridge].Name != "cni0" {
				t.Fatalf("result interfaces: %+v", res.Interfaces)
			}
			for _, ipc := range res.IPs {
				if ipc.Interface == nil || *ipc.Interface != idxContainer {
					t.Errorf("IP %v not pointing at the container interface", ipc.Address)
				}
			}
			tc.verify(t, e, pod, res)
			chk := e.args(pod, "c1", withPrev(t, conf, res))
			chk.Args = tc.cniArgs
			if err := e.check(chk); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			for i := range 2 {
				if err := e.del(a); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			e.assertClean()
		})
	}
}

func TestDelAfterNetnsGone(t *testing.T) {
	e := newEnv(t)
	pod := netnstest.New(t, "br-pod")
	conf := e.conf(map[string]any{"ipMasq": true, "macspoofchk": true, "isGateway": true}, "10.244.1.0/24", "fd00:10::/64")
	a := e.args(pod, "c1", conf)
	e.mustAdd(a)
	pod.Run(t, "true") // the namespace is usable until here
	pod.Delete(t)
	for i := range 2 {
		if err := e.del(a); err != nil {
			t.Fatalf("DEL #%d after the netns was deleted: %v", i+1, err)
		}
	}
	e.assertClean()
	if err := e.del(e.args(nil, "c1", conf)); err != nil {
		t.Fatalf("DEL without CNI_NETNS: %v", err)
	}
}

// ping retries briefly: neighbour discovery of a fresh link takes a moment.
func ping(t *testing.T, from *netnstest.NS, to string) {
	t.Helper()
	var out string
	var err error
	for range 5 {
		if out, err = from.Try("ping", "-c", "1", "-W", "1", to); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("ping %s from %s: %v\n%s", to, from.Name, err, out)
}

func TestDualStackPodsPing(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"isDefaultGateway": true, "ipMasq": true}, "10.244.1.0/24", "fd00:10::/64")
	var pods []*netnstest.NS
	var results []*current.Result
	for _, cid := range []string{"ping-a", "ping-b"} {
		pod := netnstest.New(t, "br-pod")
		res := e.mustAdd(e.args(pod, cid, conf))
		if len(res.IPs) != 2 {
			t.Fatalf("%s got %d addresses, want one per family", cid, len(res.IPs))
		}
		pods, results = append(pods, pod), append(results, res)
	}
	contains(t, "pod routes", pods[0].Run(t, "ip", "-6", "route"), "default via fd00:10::1")
	for i, pod := range pods {
		peer := results[1-i]
		for _, ipc := range peer.IPs {
			ping(t, pod, ipc.Address.IP.String())
		}
		ping(t, pod, "10.244.1.1")
		ping(t, pod, "fd00:10::1")
	}
	for i, pod := range pods {
		if err := e.del(e.args(pod, []string{"ping-a", "ping-b"}[i], conf)); err != nil {
			t.Fatal(err)
		}
	}
	e.assertClean()
}

// TestSubnetChanged reproduces the classic failure: the bridge kept the
// gateway of the node's old pod subnet.
func TestSubnetChanged(t *testing.T) {
	e := newEnv(t)
	e.node.Run(t, "ip", "link", "add", "cni0", "type", "bridge")
	e.node.Run(t, "ip", "addr", "add", "10.244.9.1/24", "dev", "cni0")
	pod := netnstest.New(t, "br-pod")
	conf := e.conf(map[string]any{"isDefaultGateway": true, "ipMasq": true}, "10.244.1.0/24")
	_, err := e.add(e.args(pod, "c1", conf))
	var ne *netconf.Error
	if !errors.As(err, &ne) || ne.Code != netconf.CodeInvalidConfig {
		t.Fatalf("ADD: %v, want a code 7 error", err)
	}
	contains(t, "error", err.Error(), `"cni0" already has an IP address different from 10.244.1.1/24`,
		"10.244.9.0/24", "10.244.1.0/24", `"forceAddress": true`, "ip link delete cni0")
	e.assertClean()

	forced := e.conf(map[string]any{"isDefaultGateway": true, "ipMasq": true, "forceAddress": true}, "10.244.1.0/24")
	a := e.args(pod, "c1", forced)
	e.mustAdd(a)
	out := e.node.Run(t, "ip", "addr", "show", "cni0")
	if !strings.Contains(out, "10.244.1.1/24") || strings.Contains(out, "10.244.9.1") {
		t.Fatalf("forceAddress did not replace the old gateway:\n%s", out)
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestFailedAddLeavesNothing(t *testing.T) {
	e := newEnv(t)
	one := map[string]any{"type": "host-local", "dataDir": e.dataDir,
		"ranges": [][]map[string]string{{{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.10", "rangeEnd": "10.244.1.10"}}}}
	conf := e.conf(map[string]any{"ipMasq": true, "isGateway": true, "macspoofchk": true, "ipam": one})
	first := netnstest.New(t, "br-pod")
	a := e.args(first, "c1", conf)
	e.mustAdd(a)

	t.Run("IPAM exhausted", func(t *testing.T) {
		pod := netnstest.New(t, "br-pod")
		if _, err := e.add(e.args(pod, "c2", conf)); err == nil {
			t.Fatal("ADD succeeded with the range exhausted")
		}
		if out := pod.Run(t, "ip", "-o", "link"); strings.Contains(out, "eth0") {
			t.Errorf("container interface left in the pod:\n%s", out)
		}
	})
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	e.assertClean()

	t.Run("ifname taken in the container", func(t *testing.T) {
		pod := netnstest.New(t, "br-pod")
		pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
		_, err := e.add(e.args(pod, "c3", conf))
		var ne *netconf.Error
		if !errors.As(err, &ne) || !strings.Contains(err.Error(), `"eth0"`) {
			t.Fatalf("ADD: %v, want an error naming eth0", err)
		}
		e.assertClean()
	})

	t.Run("gateway cannot be added after IPAM and masquerading", func(t *testing.T) {
		e.node.Run(t, "ip", "addr", "add", "192.168.77.1/24", "dev", "cni0")
		defer e.node.Run(t, "ip", "addr", "del", "192.168.77.1/24", "dev", "cni0")
		pod := netnstest.New(t, "br-pod")
		if _, err := e.add(e.args(pod, "c4", conf)); err == nil {
			t.Fatal("ADD succeeded with a conflicting bridge address")
		}
		e.assertClean()
		if out := pod.Run(t, "ip", "-o", "link"); strings.Contains(out, "eth0") {
			t.Errorf("container interface left in the pod:\n%s", out)
		}
	})

	t.Run("namespace gone", func(t *testing.T) {
		_, err := e.add(e.args(&netnstest.NS{Path: "/run/netns/does-not-exist"}, "c5", conf))
		var ne *netconf.Error
		if !errors.As(err, &ne) || ne.Code != netconf.CodeUnknownContainer {
			t.Fatalf("ADD: %v, want code 3", err)
		}
		e.assertClean()
	})
}

func TestGC(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"ipMasq": true}, "10.244.1.0/24")
	ids := []string{"gc-keep", "gc-stale1", "gc-stale2"}
	pods := map[string]*netnstest.NS{}
	for _, id := range ids {
		pods[id] = netnstest.New(t, "br-pod")
		e.mustAdd(e.args(pods[id], id, conf))
	}
	// A chain of another network, and one that only looks like ours, stay.
	e.node.Run(t, "sh", "-c", `printf '*nat\n:CNI-other - [0:0]\n-A CNI-other -m comment --comment "name: \\"testnet\\" id: \\"gc-stale1\\"" -j RETURN\nCOMMIT\n' | iptables-restore --noflush`)
	gcConf := withValid(t, conf, "cni.dev/valid-attachments", "gc-keep")
	if err := e.in(func(ctx context.Context) error { return e.p.GC(ctx, e.args(nil, "", gcConf)) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	nat := e.node.Run(t, "iptables-save", "-t", "nat")
	contains(t, "nat", nat, `id: \"gc-keep\"`, "CNI-other")
	if strings.Count(nat, "-A POSTROUTING") != 1 {
		t.Errorf("stale jumps remain:\n%s", nat)
	}
	for _, id := range ids[1:] {
		if strings.Contains(nat, "CNI-"+chainSuffix(id)) {
			t.Errorf("chain of %s survived GC:\n%s", id, nat)
		}
	}
	reserved, _ := filepath.Glob(filepath.Join(e.dataDir, "testnet", "10.*"))
	if len(reserved) != 1 {
		t.Errorf("after GC, reservations %v, want only gc-keep's", reserved)
	}
	// An empty valid list removes everything of the network.
	if err := e.in(func(ctx context.Context) error {
		return e.p.GC(ctx, e.args(nil, "", withValid(t, conf, "cni.dev/attachments")))
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	e.node.Run(t, "sh", "-c", "iptables -t nat -F CNI-other && iptables -t nat -X CNI-other")
	for _, id := range ids {
		if err := e.del(e.args(pods[id], id, conf)); err != nil {
			t.Errorf("DEL %s after GC: %v", id, err)
		}
	}
	e.assertClean()
}

func chainSuffix(id string) string { return strings.TrimPrefix(masq.ChainName("testnet", id), "CNI-") }

func TestCheckDetectsDrift(t *testing.T) {
	e := newEnv(t)
	pod := netnstest.New(t, "br-pod")
	conf := e.conf(map[string]any{"isDefaultGateway": true}, "10.244.1.0/24")
	a := e.args(pod, "c1", conf)
	res := e.mustAdd(a)
	chk := e.args(pod, "c1", withPrev(t, conf, res))
	steps := []struct {
		name, want string
		breakIt    func()
		fixIt      func()
	}{
		{"address removed", "10.244.1.2/24", func() { pod.Run(t, "ip", "addr", "del", "10.244.1.2/24", "dev", "eth0") },
			func() {
				pod.Run(t, "ip", "addr", "add", "10.244.1.2/24", "dev", "eth0")
				pod.Run(t, "ip", "route", "replace", "default", "via", "10.244.1.1")
			}},
		{"default route removed", "0.0.0.0/0", func() { pod.Run(t, "ip", "route", "del", "default") },
			func() { pod.Run(t, "ip", "route", "add", "default", "via", "10.244.1.1") }},
		{"veth detached", "not a port", func() { e.node.Run(t, "ip", "link", "set", hostVeth(res), "nomaster") },
			func() { e.node.Run(t, "ip", "link", "set", hostVeth(res), "master", "cni0") }},
		{"MAC changed", "MAC", func() { pod.Run(t, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:99") },
			func() { pod.Run(t, "ip", "link", "set", "eth0", "address", res.Interfaces[idxContainer].Mac) }},
	}
	for _, s := range steps {
		s.breakIt()
		err := e.check(chk)
		if err == nil || !strings.Contains(err.Error(), s.want) {
			t.Errorf("%s: CHECK = %v, want an error mentioning %q", s.name, err, s.want)
		}
		s.fixIt()
		if err := e.check(chk); err != nil {
			t.Fatalf("after repairing %s: CHECK = %v", s.name, err)
		}
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	if err := e.check(chk); err == nil {
		t.Error("CHECK passed after DEL")
	}
	e.assertClean()
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	for _, conf := range []string{e.conf(nil), e.conf(nil, "10.244.1.0/24")} {
		if err := e.in(func(ctx context.Context) error { return e.p.Status(ctx, e.args(nil, "", conf)) }); err != nil {
			t.Errorf("STATUS %s: %v", conf, err)
		}
	}
	bad := e.conf(map[string]any{"vlan": 5000})
	var ne *netconf.Error
	if err := e.p.Status(context.Background(), e.args(nil, "", bad)); !errors.As(err, &ne) || ne.Code != netconf.CodeInvalidConfig {
		t.Errorf("STATUS of an invalid configuration: %v, want code 7", err)
	}
}

func withValid(t *testing.T, conf, key string, ids ...string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(conf), &m); err != nil {
		t.Fatal(err)
	}
	list := []map[string]string{}
	for _, id := range ids {
		list = append(list, map[string]string{"containerID": id, "ifname": "eth0"})
	}
	m[key] = list
	b, _ := json.Marshal(m)
	return string(b)
}
