package bandwidth

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// env is a node namespace, where the plugin runs, and its pods.
type env struct {
	t    *testing.T
	node *netnstest.NS
	pods int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{t: t, node: netnstest.New(t, "bw-node")}
}

// pod is a namespace whose eth0 is a veth to the node.
type pod struct {
	ns   *netnstest.NS
	id   string // container ID
	veth string // the node side
	// addrs are eth0's, gateway .1 (::1) on the node side.
	addrs []string
}

// addPod makes a pod with a veth; addrs (CIDRs) go on eth0, the first
// address of each subnet on the node side, and the node side is the
// pod's default route.
func (e *env) addPod(addrs ...string) *pod {
	e.t.Helper()
	e.pods++
	p := &pod{ns: netnstest.New(e.t, "bw-pod"), id: fmt.Sprintf("c%d", e.pods), veth: fmt.Sprintf("veth%d", e.pods), addrs: addrs}
	e.node.Run(e.t, "ip", "link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.ns.Name)
	e.node.Run(e.t, "ip", "link", "set", p.veth, "up")
	p.ns.Run(e.t, "ip", "link", "set", "eth0", "up")
	for _, a := range addrs {
		ip, sub, _ := net.ParseCIDR(a)
		gw := gateway(sub)
		ones, _ := sub.Mask.Size()
		p.ns.Run(e.t, "ip", "addr", "add", a, "dev", "eth0", "nodad")
		e.node.Run(e.t, "ip", "addr", "add", fmt.Sprintf("%s/%d", gw, ones), "dev", p.veth, "nodad")
		p.ns.Run(e.t, "ip", "route", "add", "default", "via", gw.String(), "dev", "eth0", "proto", "static", "metric", "10")
		_ = ip
	}
	return p
}

// gateway is the first address of sub.
func gateway(sub *net.IPNet) net.IP {
	gw := append(net.IP(nil), sub.IP...)
	gw[len(gw)-1]++
	return gw
}

// result is what the plugin that made the veth returns for p.
func (p *pod) result() *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{
		{Name: p.veth, Mac: "02:00:00:00:00:01"}, {Name: "eth0", Mac: "02:00:00:00:00:02", Sandbox: p.ns.Path},
	}}
	for _, a := range p.addrs {
		ip, sub, _ := net.ParseCIDR(a)
		res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(1), Address: net.IPNet{IP: ip, Mask: sub.Mask}, Gateway: gateway(sub)})
	}
	return res
}

// netConf is a bandwidth configuration of cniVersion ver chained after p's
// result (none when p is nil), with over's keys (a nil value deletes one).
func netConf(t *testing.T, ver string, p *pod, over map[string]any) string {
	t.Helper()
	c := map[string]any{"cniVersion": ver, "name": "bwnet", "type": "bandwidth"}
	if p != nil {
		prev, err := p.result().GetAsVersion(ver)
		if err != nil {
			t.Fatal(err)
		}
		c["prevResult"] = prev
	}
	maps.Copy(c, over)
	maps.DeleteFunc(c, func(_ string, v any) bool { return v == nil })
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (p *pod) args(conf string) *cniplugin.Args {
	return &cniplugin.Args{ContainerID: p.id, Netns: p.ns.Path, IfName: "eth0", StdinData: []byte(conf)}
}

// in runs a verb inside the node namespace.
func (e *env) in(fn func(ctx context.Context) error) error {
	e.t.Helper()
	var err error
	e.node.Do(e.t, func() error { err = fn(context.Background()); return nil })
	return err
}

func (e *env) add(a *cniplugin.Args) (*current.Result, error) {
	e.t.Helper()
	var res types.Result
	err := e.in(func(ctx context.Context) (err error) { res, err = Plugin{}.Add(ctx, a); return err })
	if err != nil {
		return nil, err
	}
	return res.(*current.Result), nil
}

func (e *env) mustAdd(a *cniplugin.Args) *current.Result {
	e.t.Helper()
	res, err := e.add(a)
	if err != nil {
		e.t.Fatalf("ADD %s: %v", a.ContainerID, err)
	}
	return res
}

func (e *env) check(a *cniplugin.Args) error {
	e.t.Helper()
	return e.in(func(ctx context.Context) error { return Plugin{}.Check(ctx, a) })
}

func (e *env) del(a *cniplugin.Args) error {
	e.t.Helper()
	return e.in(func(ctx context.Context) error { return Plugin{}.Del(ctx, a) })
}

func (e *env) gc(a *cniplugin.Args) error {
	e.t.Helper()
	return e.in(func(ctx context.Context) error { return Plugin{}.GC(ctx, a) })
}

// tc is what `tc <args> show dev <dev>` prints in the node.
func (e *env) tc(what, dev string, extra ...string) string {
	e.t.Helper()
	return e.node.Run(e.t, append([]string{"tc", what, "show", "dev", dev}, extra...)...)
}

// state is everything the plugin may change in the node: the qdiscs of
// the pods' veths and the ifbs, for comparing before and after.
func (e *env) state(pods ...*pod) string {
	e.t.Helper()
	var b strings.Builder
	for _, p := range pods {
		b.WriteString(e.tc("qdisc", p.veth))
	}
	b.WriteString(strings.Join(e.node.Links(e.t, "type", "ifb"), " "))
	return b.String()
}
