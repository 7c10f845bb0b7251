package sbr

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// pod is a pod whose interfaces lead to a node, as a plugin before sbr
// leaves them: an address with its subnet route and a default route.
type pod struct {
	t    *testing.T
	ns   *netnstest.NS
	node *netnstest.NS
}

func newPod(t *testing.T) *pod {
	netnstest.SkipUnlessRoot(t)
	p := &pod{t: t, ns: netnstest.New(t, "sbr-pod"), node: netnstest.New(t, "sbr-node")}
	p.node.Run(t, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo") // somewhere off every subnet
	return p
}

// iface gives the pod ifName with addr (e.g. 10.1.1.2/24) and a default
// route via gw, the node's end holding gw, and returns the interface's
// part of a prevResult.
func (p *pod) iface(ifName, addr, gw string, metric string) *current.Result {
	t := p.t
	peer := "n-" + ifName
	p.node.Run(t, "ip", "link", "add", peer, "type", "veth", "peer", "name", ifName, "netns", p.ns.Name)
	bits := addr[strings.Index(addr, "/"):]
	p.node.Run(t, "ip", "addr", "add", gw+bits, "dev", peer)
	p.node.Run(t, "ip", "link", "set", peer, "up")
	p.ns.Run(t, "ip", "addr", "add", addr, "dev", ifName)
	p.ns.Run(t, "ip", "link", "set", ifName, "up")
	p.ns.Run(t, "ip", "route", "add", "default", "via", gw, "dev", ifName, "metric", metric)
	var res current.Result
	raw := `{"cniVersion":"1.1.0","interfaces":[{"name":"` + ifName + `","sandbox":"` + p.ns.Path + `"}],` +
		`"ips":[{"address":"` + addr + `","gateway":"` + gw + `","interface":0}]}`
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatal(err)
	}
	return &res
}

func conf(t *testing.T, prev *current.Result, over string) []byte {
	c := `{"cniVersion":"1.1.0","name":"sbrnet","type":"sbr"` + over
	if prev != nil {
		b, err := json.Marshal(prev)
		if err != nil {
			t.Fatal(err)
		}
		c += `,"prevResult":` + string(b)
	}
	return []byte(c + "}")
}

func (p *pod) args(ifName string, stdin []byte) *cniplugin.Args {
	return &cniplugin.Args{ContainerID: "c1", Netns: p.ns.Path, IfName: ifName, StdinData: stdin}
}

// shows fails unless the output of cmd in the pod holds each of wants.
func (p *pod) shows(cmd string, wants ...string) {
	p.t.Helper()
	out := p.ns.Run(p.t, strings.Fields(cmd)...)
	for _, w := range wants {
		if !strings.Contains(out, w) {
			p.t.Errorf("`%s` lacks %q:\n%s", cmd, w, out)
		}
	}
}

// TestLayoutAndTraffic: two interfaces each get their table, 100 and 101,
// with the reference's layout; what the pod sends from an address leaves
// by that address's interface, whichever default route the main table
// had; DEL removes rules and tables, twice.
func TestLayoutAndTraffic(t *testing.T) {
	p := newPod(t)
	ctx := context.Background()
	prev0 := p.iface("eth0", "10.1.1.2/24", "10.1.1.1", "100")
	prev1 := p.iface("net1", "10.2.2.2/24", "10.2.2.1", "200")
	for _, c := range []struct {
		ifName string
		prev   *current.Result
	}{{"eth0", prev0}, {"net1", prev1}} {
		res, err := Plugin{}.Add(ctx, p.args(c.ifName, conf(t, c.prev, "")))
		if err != nil {
			t.Fatalf("ADD %s: %v", c.ifName, err)
		}
		if r := res.(*current.Result); len(r.IPs) != 1 || r.IPs[0].Address.String() != c.prev.IPs[0].Address.String() {
			t.Errorf("ADD %s did not pass the prevResult through: %+v", c.ifName, r)
		}
		if err := (Plugin{}).Check(ctx, p.args(c.ifName, conf(t, c.prev, ""))); err != nil {
			t.Errorf("CHECK %s: %v", c.ifName, err)
		}
	}
	p.shows("ip rule", "from 10.1.1.2 lookup 100", "from 10.2.2.2 lookup 101")
	p.shows("ip route show table 100", "default via 10.1.1.1 dev eth0", "10.1.1.0/24 dev eth0 proto kernel scope link src 10.1.1.2")
	p.shows("ip route show table 101", "default via 10.2.2.1 dev net1", "10.2.2.0/24 dev net1 proto kernel scope link src 10.2.2.2")
	if out := p.ns.Run(t, "ip", "route", "show", "table", "main"); strings.TrimSpace(out) != "" {
		t.Errorf("the main table still routes the interfaces:\n%s", out)
	}
	p.shows("ip route get 192.0.2.1 from 10.2.2.2", "via 10.2.2.1 dev net1 table 101")
	before := rxPackets(t, p.node, "n-net1")
	if out, err := p.ns.Try("ping", "-c", "3", "-i", "0.2", "-w", "3", "-I", "10.2.2.2", "192.0.2.1"); err != nil {
		t.Fatalf("ping from 10.2.2.2: %v\n%s", err, out)
	}
	if rxPackets(t, p.node, "n-net1") < before+3 {
		t.Errorf("the pings from 10.2.2.2 did not leave by net1")
	}
	for _, ifName := range []string{"net1", "eth0"} {
		for range 2 {
			if err := (Plugin{}).Del(ctx, p.args(ifName, conf(t, nil, ""))); err != nil {
				t.Fatalf("DEL %s: %v", ifName, err)
			}
		}
	}
	if out := p.ns.Run(t, "ip", "rule"); strings.Contains(out, "lookup 10") {
		t.Errorf("rules left:\n%s", out)
	}
	for _, table := range []string{"100", "101"} {
		if out := p.ns.Run(t, "ip", "route", "show", "table", table); strings.TrimSpace(out) != "" {
			t.Errorf("table %s left:\n%s", table, out)
		}
	}
}

// rxPackets reads how many packets a node link received (ip netns exec
// mounts the namespace's own /sys).
func rxPackets(t *testing.T, ns *netnstest.NS, name string) int {
	n, err := strconv.Atoi(strings.TrimSpace(ns.Run(t, "cat", "/sys/class/net/"+name+"/statistics/rx_packets")))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTableKey: with "table", ADD adds only the rules to it and DEL
// removes only those; the main table keeps the interface's routes.
func TestTableKey(t *testing.T) {
	p := newPod(t)
	ctx := context.Background()
	prev := p.iface("eth0", "10.1.1.2/24", "10.1.1.1", "100")
	stdin := conf(t, prev, `,"table":500`)
	if _, err := (Plugin{}).Add(ctx, p.args("eth0", stdin)); err != nil {
		t.Fatal(err)
	}
	p.shows("ip rule", "from 10.1.1.2 lookup 500")
	p.shows("ip route", "default via 10.1.1.1 dev eth0")
	if err := (Plugin{}).Check(ctx, p.args("eth0", stdin)); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := (Plugin{}).Check(ctx, p.args("eth0", conf(t, prev, `,"table":501`))); err == nil {
		t.Error("CHECK passed with another table")
	}
	if err := (Plugin{}).Del(ctx, p.args("eth0", stdin)); err != nil {
		t.Fatal(err)
	}
	if out := p.ns.Run(t, "ip", "rule"); strings.Contains(out, "lookup 500") {
		t.Errorf("rule left:\n%s", out)
	}
}

// TestDelAfterNetnsGone: the reference's DEL creates a plain file at the
// old CNI_NETNS path (its lock) and fails, so that the runtime never
// releases the pod's address; this DEL succeeds and creates nothing.
func TestDelAfterNetnsGone(t *testing.T) {
	p := newPod(t)
	ctx := context.Background()
	prev := p.iface("eth0", "10.1.1.2/24", "10.1.1.1", "100")
	if _, err := (Plugin{}).Add(ctx, p.args("eth0", conf(t, prev, ""))); err != nil {
		t.Fatal(err)
	}
	path := p.ns.Path
	p.ns.Delete(t)
	for _, stdin := range [][]byte{conf(t, prev, ""), conf(t, nil, "")} {
		if err := (Plugin{}).Del(ctx, p.args("eth0", stdin)); err != nil {
			t.Fatalf("DEL after the netns was deleted: %v", err)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Fatalf("DEL left something at %s: %v", path, err)
		}
	}
	if err := (Plugin{}).Del(ctx, &cniplugin.Args{ContainerID: "c1", IfName: "eth0", StdinData: conf(t, nil, "")}); err != nil {
		t.Fatalf("DEL without CNI_NETNS: %v", err)
	}
}

// TestFailedAddLeavesNothing: the second address's gateway cannot be
// routed to, after the first address's table and both rules were made:
// ADD fails and the pod's rules and routes are as before.
func TestFailedAddLeavesNothing(t *testing.T) {
	p := newPod(t)
	prev := p.iface("eth0", "10.1.1.2/24", "10.1.1.1", "100")
	var bad current.IPConfig
	if err := json.Unmarshal([]byte(`{"address":"10.3.3.2/24","gateway":"10.9.9.9","interface":0}`), &bad); err != nil {
		t.Fatal(err)
	}
	prev.IPs = append(prev.IPs, &bad)
	rules, main := p.ns.Run(t, "ip", "rule"), p.ns.Run(t, "ip", "route")
	if _, err := (Plugin{}).Add(context.Background(), p.args("eth0", conf(t, prev, ""))); err == nil || !strings.Contains(err.Error(), "10.9.9.9") && !strings.Contains(err.Error(), "0.0.0.0/0") {
		t.Fatalf("ADD: %v, want the default route via 10.9.9.9 refused", err)
	}
	if after := p.ns.Run(t, "ip", "rule"); after != rules {
		t.Errorf("rules before ADD:\n%s\nafter:\n%s", rules, after)
	}
	if after := p.ns.Run(t, "ip", "route"); after != main {
		t.Errorf("main table before ADD:\n%s\nafter:\n%s", main, after)
	}
	for _, table := range []string{"100", "101"} {
		if out := p.ns.Run(t, "ip", "route", "show", "table", table); strings.TrimSpace(out) != "" {
			t.Errorf("table %s left:\n%s", table, out)
		}
	}
}

// TestPassThrough: a prevResult without an address on the interface (a
// plugin chained without IPAM) is passed through, nothing done.
func TestPassThrough(t *testing.T) {
	p := newPod(t)
	prev := p.iface("eth0", "10.1.1.2/24", "10.1.1.1", "100")
	prev.IPs = nil
	rules := p.ns.Run(t, "ip", "rule")
	res, err := (Plugin{}).Add(context.Background(), p.args("eth0", conf(t, prev, "")))
	if err != nil || len(res.(*current.Result).Interfaces) != 1 {
		t.Fatalf("ADD: %v, %v", res, err)
	}
	if after := p.ns.Run(t, "ip", "rule"); after != rules {
		t.Errorf("rules changed:\n%s", after)
	}
}

func TestBadInput(t *testing.T) {
	prev := `,"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.1.1.2/24"}]}`
	cases := []struct {
		name, stdin string
		code        uint
	}{
		{"not JSON", `{`, netconf.CodeDecoding},
		{"no name", `{"cniVersion":"1.1.0","type":"sbr"}`, netconf.CodeInvalidConfig},
		{"table not a number", `{"cniVersion":"1.1.0","name":"n","type":"sbr","table":"x"}`, netconf.CodeDecoding},
		{"table main", `{"cniVersion":"1.1.0","name":"n","type":"sbr","table":254` + prev + `}`, netconf.CodeInvalidConfig},
		{"table 0", `{"cniVersion":"1.1.0","name":"n","type":"sbr","table":0` + prev + `}`, netconf.CodeInvalidConfig},
		{"not chained", `{"cniVersion":"1.1.0","name":"n","type":"sbr"}`, netconf.CodeInvalidConfig},
		{"netns gone", `{"cniVersion":"1.1.0","name":"n","type":"sbr"` + prev + `}`, netconf.CodeUnknownContainer},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &cniplugin.Args{ContainerID: "c1", Netns: "/run/netns/sbr-does-not-exist", IfName: "eth0", StdinData: []byte(tc.stdin)}
			_, err := Plugin{}.Add(context.Background(), a)
			if err == nil || cniplugin.ToCNIError(err).Code != tc.code {
				t.Fatalf("ADD: %v, want code %d", err, tc.code)
			}
			if _, err := os.Lstat(a.Netns); !os.IsNotExist(err) {
				t.Errorf("ADD created %s", a.Netns)
			}
		})
	}
}
