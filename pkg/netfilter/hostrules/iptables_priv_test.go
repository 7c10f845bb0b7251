package hostrules

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/iptablestest"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// packets is the packet counter of the nat rule "-A chain spec".
func packets(t *testing.T, ns *netnstest.NS, chain, spec string) int {
	t.Helper()
	for line := range strings.Lines(ns.Run(t, "iptables-save", "-c", "-t", "nat")) {
		if cnt, rest, ok := strings.Cut(strings.TrimSpace(line), " "); ok && rest == "-A "+chain+" "+spec {
			n, _ := strconv.Atoi(strings.TrimPrefix(strings.Split(cnt, ":")[0], "["))
			return n
		}
	}
	t.Fatalf("no rule -A %s %s", chain, spec)
	return 0
}

// TestFlannelHostRules applies flanneld's rules in a node namespace with a
// pod behind it and an outside host next to it, over a foreign ruleset with
// a FORWARD policy of DROP, and checks which rule each kind of traffic hits,
// drift detection and repair, and that Teardown restores the ruleset.
func TestFlannelHostRules(t *testing.T) {
	node, pod := flannelNode(t)
	base4, base6 := iptablestest.Ruleset(t, node, "iptables-save"), iptablestest.Ruleset(t, node, "ip6tables-save")
	ctx, h := context.Background(), IPTables{Run: iptablestest.Netns{Name: node.Name}}
	rules := Rules{Masq: true, Forward: true, Nets: []Net{
		{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.1.0/24")},
		{netip.MustParsePrefix("fd00:10::/56"), netip.MustParsePrefix("fd00:10:0:1::/64")},
	}}
	if _, err := pod.Try("ping", "-c", "1", "-W", "1", "192.168.60.2"); err == nil {
		t.Fatal("FORWARD let the pod out before any rule: FLANNEL-FWD would prove nothing")
	}
	if err := h.Apply(ctx, rules); err != nil {
		t.Fatal(err)
	}
	applied4 := iptablestest.Ruleset(t, node, "iptables-save")
	for _, c := range rules.iptablesChains(family.IPv4) {
		for _, spec := range c.rules {
			if !strings.Contains(applied4, "-A "+c.name+" "+spec+"\n") {
				t.Errorf("iptables-save lacks -A %s %s:\n%s", c.name, spec, applied4)
			}
		}
	}
	if !strings.Contains(iptablestest.Ruleset(t, node, "ip6tables-save"), "-A FLANNEL-POSTRTG -s fd00:10::/56 ! -d ff00::/8 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully") {
		t.Error("IPv6 rules missing")
	}
	if drift, err := h.Check(ctx, rules); err != nil || len(drift) != 0 {
		t.Errorf("Check right after Apply: %q, %v", drift, err)
	}
	if err := h.Apply(ctx, rules); err != nil || iptablestest.Ruleset(t, node, "iptables-save") != applied4 {
		t.Errorf("a second Apply changed the rules (%v)", err)
	}
	checkTraffic(t, node, pod, rules)

	node.Run(t, "iptables", "-t", "nat", "-D", iptChains[masqChain].name, "2")
	node.Run(t, "iptables", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", iptChains[forwardChain].name)
	node.Run(t, "ip6tables", "-t", "nat", "-N", "FLANNEL-POSTRTG-x") // a look-alike is not drift
	drift, err := h.Ensure(ctx, rules)
	if err != nil || len(drift) != 2 {
		t.Errorf("Ensure after two changes: %q, %v", drift, err)
	}
	if drift, err := h.Check(ctx, rules); err != nil || len(drift) != 0 || iptablestest.Ruleset(t, node, "iptables-save") != applied4 {
		t.Errorf("after repair: %q, %v", drift, err)
	}

	node.Run(t, "ip6tables", "-t", "nat", "-X", "FLANNEL-POSTRTG-x")

	noMasq := rules
	noMasq.Masq = false
	if err := h.Apply(ctx, noMasq); err != nil {
		t.Fatal(err)
	}
	if s := iptablestest.Ruleset(t, node, "iptables-save"); strings.Contains(s, iptChains[masqChain].name) || !strings.Contains(s, iptChains[forwardChain].name) {
		t.Errorf("masquerading turned off:\n%s", s)
	}
	for range 2 {
		if err := h.Teardown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := iptablestest.Ruleset(t, node, "iptables-save"); got != base4 {
		t.Errorf("IPv4 after Teardown:\n%s\nwant the starting ruleset:\n%s", got, base4)
	}
	if got := iptablestest.Ruleset(t, node, "ip6tables-save"); got != base6 {
		t.Errorf("IPv6 after Teardown:\n%s\nwant the starting ruleset:\n%s", got, base6)
	}
}

// flannelNode makes a node namespace with a pod behind it (10.244.1.2) and
// an outside host next to it (192.168.60.2, also holding another node's pod
// address 10.244.2.1), and the rules that kube-proxy, docker and an admin
// leave on a node, among them a FORWARD policy of DROP.
func flannelNode(t *testing.T) (node, pod *netnstest.NS) {
	node, pod, out := netnstest.New(t, "fl-node"), netnstest.New(t, "fl-pod"), netnstest.New(t, "fl-out")
	node.Run(t, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", pod.Name)
	node.Run(t, "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", out.Name)
	for _, c := range [][]string{
		{"node", "ip", "addr", "add", "10.244.1.1/24", "dev", "veth0"}, {"node", "ip", "link", "set", "veth0", "up"},
		{"node", "ip", "addr", "add", "192.168.60.1/24", "dev", "eth1"}, {"node", "ip", "link", "set", "eth1", "up"},
		{"node", "ip", "route", "add", "10.244.2.0/24", "via", "192.168.60.2"},
		{"node", "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"pod", "ip", "addr", "add", "10.244.1.2/24", "dev", "eth0"}, {"pod", "ip", "link", "set", "eth0", "up"},
		{"pod", "ip", "route", "add", "default", "via", "10.244.1.1"},
		{"out", "ip", "addr", "add", "192.168.60.2/24", "dev", "eth0"}, {"out", "ip", "link", "set", "eth0", "up"},
		{"out", "ip", "addr", "add", "10.244.2.1/32", "dev", "eth0"}, // another node's pod
		{"out", "ip", "route", "add", "10.244.1.0/24", "via", "192.168.60.1"},
		// What kube-proxy, docker and an admin leave on a node.
		{"node", "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE"},
		{"node", "iptables", "-P", "FORWARD", "DROP"},
		{"node", "ip6tables", "-t", "nat", "-A", "POSTROUTING", "-s", "fd00:17::/64", "-j", "MASQUERADE"},
		{"node", "ip6tables", "-P", "FORWARD", "DROP"},
	} {
		map[string]*netnstest.NS{"node": node, "pod": pod, "out": out}[c[0]].Run(t, c[1:]...)
	}
	return node, pod
}

// checkTraffic sends three kinds of traffic and checks, by the packet
// counters, which rule of FLANNEL-POSTRTG decided each.
func checkTraffic(t *testing.T, node, pod *netnstest.NS, rules Rules) {
	t.Helper()
	masq := rules.iptablesChains(family.IPv4)[0].rules
	podToCluster, podOut, hostToPods := masq[1], masq[4], masq[5]
	before := map[string]int{}
	for _, r := range []string{podToCluster, podOut, hostToPods} {
		before[r] = packets(t, node, iptChains[masqChain].name, r)
	}
	for _, tc := range []struct {
		name     string
		from     *netnstest.NS
		to, rule string
	}{
		{"pod to outside: masqueraded", pod, "192.168.60.2", podOut},
		{"pod to another node's pod: untouched", pod, "10.244.2.1", podToCluster},
		{"host to another node's pod: masqueraded", node, "10.244.2.1", hostToPods},
	} {
		if out, err := tc.from.Try("ping", "-c", "1", "-W", "2", tc.to); err != nil {
			t.Errorf("%s: %v\n%s", tc.name, err, out)
		}
		if got := packets(t, node, iptChains[masqChain].name, tc.rule); got != before[tc.rule]+1 {
			t.Errorf("%s: rule %q counted %d packets, want %d", tc.name, tc.rule, got, before[tc.rule]+1)
		}
		before[tc.rule]++
	}
}
