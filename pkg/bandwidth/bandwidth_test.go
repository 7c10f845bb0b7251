package bandwidth

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func contains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: want %q in:\n%s", what, w, out)
		}
	}
}

func lacks(t *testing.T, what, out string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(out, w) {
			t.Errorf("%s: %q in:\n%s", what, w, out)
		}
	}
}

var (
	ingress10M = map[string]any{"ingressRate": 10_000_000, "ingressBurst": 512_000}
	egress20M  = map[string]any{"egressRate": 20_000_000, "egressBurst": 512_000}
	both       = merge(ingress10M, egress20M)
)

func merge(ms ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// Checks of what ADD installed, on the node side of the veth and on the ifb.
func ingressTBF(t *testing.T, e *env, p *pod) {
	contains(t, "veth qdiscs", e.tc("qdisc", p.veth), "qdisc tbf 1: root", "rate 10Mbit burst 64000b lat 25ms")
}

func egressTBF(t *testing.T, e *env, p *pod) {
	ifb := ifbName("bwnet", p.id)
	contains(t, "ifb qdiscs", e.tc("qdisc", ifb), "qdisc tbf 1: root", "rate 20Mbit burst 64000b lat 25ms")
	contains(t, "veth ingress", e.tc("filter", p.veth, "ingress"), "mirred (Egress Redirect to device "+ifb+")")
	contains(t, "ifb", e.node.Run(t, "ip", "-d", "link", "show", ifb), "alias cnisuite bandwidth network=bwnet containerID="+p.id, "mtu 1500", "state UNKNOWN")
}

func noIngress(t *testing.T, e *env, p *pod) {
	lacks(t, "veth qdiscs", e.tc("qdisc", p.veth), "1: root")
}

func noEgress(t *testing.T, e *env, p *pod) {
	lacks(t, "veth qdiscs", e.tc("qdisc", p.veth), "ingress")
	if ifbs := e.node.Links(t, "type", "ifb"); len(ifbs) > 0 {
		t.Errorf("ifbs without an egress limit: %v", ifbs)
	}
}

// htb checks the htb on dev: its default class, both classes and the
// filters' matches.
func htb(t *testing.T, e *env, dev, def, rate string, matches ...string) {
	t.Helper()
	contains(t, dev+" qdiscs", e.tc("qdisc", dev), "qdisc htb 1: root", "default "+def, "qdisc bfifo", "parent 1:30", "qdisc pfifo", "parent 1:1 limit 1000p")
	contains(t, dev+" classes", e.tc("class", dev), "class htb 1:1 root", "rate 800Gbit ceil 800Gbit", "class htb 1:30 root", "rate "+rate+" ceil "+rate+" burst 64000b cburst 64000b")
	contains(t, dev+" filters", e.tc("filter", dev), matches...)
}

var keyCases = []struct {
	name   string
	over   map[string]any
	verify func(t *testing.T, e *env, p *pod)
}{
	{"ingressRate and ingressBurst", ingress10M, func(t *testing.T, e *env, p *pod) { ingressTBF(t, e, p); noEgress(t, e, p) }},
	{"egressRate and egressBurst", egress20M, func(t *testing.T, e *env, p *pod) { egressTBF(t, e, p); noIngress(t, e, p) }},
	{"both directions", both, func(t *testing.T, e *env, p *pod) { ingressTBF(t, e, p); egressTBF(t, e, p) }},
	{"runtimeConfig.bandwidth", map[string]any{"runtimeConfig": map[string]any{"bandwidth": both}},
		func(t *testing.T, e *env, p *pod) { ingressTBF(t, e, p); egressTBF(t, e, p) }},
	// As the reference: a top-level limit takes all four from the top.
	{"top-level limits over runtimeConfig", merge(ingress10M, map[string]any{"runtimeConfig": map[string]any{"bandwidth": egress20M}}),
		func(t *testing.T, e *env, p *pod) { ingressTBF(t, e, p); noEgress(t, e, p) }},
	// The subnets are matched against the remote end: the source on the
	// way to the pod (at 12 and 8), the destination from it (16 and 24).
	{"unshapedSubnets", merge(both, map[string]any{"unshapedSubnets": []string{"10.30.0.0/16", "fd00:30::/32"}}), func(t *testing.T, e *env, p *pod) {
		htb(t, e, p.veth, "0x30", "10Mbit", "flowid 1:1", "match 0a1e0000/ffff0000 at 12", "match fd000030/ffffffff at 8")
		htb(t, e, ifbName("bwnet", p.id), "0x30", "20Mbit", "flowid 1:1", "match 0a1e0000/ffff0000 at 16", "match fd000030/ffffffff at 24")
		lacks(t, "filters", e.tc("filter", p.veth), "flowid 1:30")
	}},
	{"shapedSubnets", merge(both, map[string]any{"shapedSubnets": []string{"10.20.0.0/16", "fd00:20::/32", "0.0.0.0/0"}}), func(t *testing.T, e *env, p *pod) {
		htb(t, e, p.veth, "0x1", "10Mbit", "flowid 1:30", "match 0a140000/ffff0000 at 12", "match fd000020/ffffffff at 8", "match 00000000/00000000 at 0")
		htb(t, e, ifbName("bwnet", p.id), "0x1", "20Mbit", "flowid 1:30", "match 0a140000/ffff0000 at 16", "match fd000020/ffffffff at 24")
		lacks(t, "filters", e.tc("filter", p.veth), "flowid 1:1 ")
	}},
	{"static subnets with runtime limits", map[string]any{"unshapedSubnets": []string{"10.30.0.0/16"}, "runtimeConfig": map[string]any{"bandwidth": ingress10M}},
		func(t *testing.T, e *env, p *pod) {
			htb(t, e, p.veth, "0x30", "10Mbit", "flowid 1:1", "match 0a1e0000/ffff0000 at 12")
			noEgress(t, e, p)
		}},
	{"no limits", map[string]any{"shapedSubnets": []string{"10.20.0.0/16"}}, func(t *testing.T, e *env, p *pod) { noIngress(t, e, p); noEgress(t, e, p) }},
}

// TestKeys runs ADD, CHECK, DEL and DEL again for every key, and checks
// what ADD installed, the result, and that DEL leaves no ifb.
func TestKeys(t *testing.T) {
	for _, tt := range keyCases {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			p := e.addPod("10.10.1.2/24")
			conf := netConf(t, "1.1.0", p, tt.over)
			res := e.mustAdd(p.args(conf))
			tt.verify(t, e, p)
			checkResult(t, e, p, res)
			if err := e.check(p.args(withPrev(t, conf, res))); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			for i := range 2 {
				if err := e.del(p.args(conf)); err != nil {
					t.Fatalf("DEL %d: %v", i+1, err)
				}
				if ifbs := e.node.Links(t, "type", "ifb"); len(ifbs) > 0 {
					t.Fatalf("DEL %d left %v", i+1, ifbs)
				}
			}
		})
	}
}

// checkResult: the prevResult passed on, with the ifb (and its MAC) when
// there is one, as the reference adds it.
func checkResult(t *testing.T, e *env, p *pod, res *current.Result) {
	t.Helper()
	want := p.result()
	if ifb, err := e.ifb(p); err == nil {
		want.Interfaces = append(want.Interfaces, &current.Interface{Name: ifb.Attrs().Name, Mac: ifb.Attrs().HardwareAddr.String()})
	}
	got, _ := json.Marshal(res)
	w, _ := json.Marshal(want)
	if string(got) != string(w) {
		t.Errorf("result\n%s\nwant\n%s", got, w)
	}
}

func (e *env) ifb(p *pod) (l netlink.Link, err error) {
	e.node.Do(e.t, func() error { l, err = netlink.LinkByName(ifbName("bwnet", p.id)); return nil })
	return l, err
}

// withPrev returns conf with res, in conf's version, as its prevResult, as
// runtimes send CHECK.
func withPrev(t *testing.T, conf string, res *current.Result) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(conf), &m); err != nil {
		t.Fatal(err)
	}
	prev, err := res.GetAsVersion(m["cniVersion"].(string))
	if err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = prev
	out, _ := json.Marshal(m)
	return string(out)
}

// TestCheckFindsChanges: CHECK fails, saying what differs, when the
// shaping is not what the configuration asks for.
func TestCheckFindsChanges(t *testing.T) {
	subnets := merge(both, map[string]any{"unshapedSubnets": []string{"10.30.0.0/16"}})
	tests := []struct {
		name   string
		over   map[string]any
		change func(e *env, p *pod) // after ADD
		check  map[string]any       // CHECK's configuration, else ADD's
		want   string
	}{
		{name: "rate changed", over: both, change: func(e *env, p *pod) {
			e.node.Run(e.t, "tc", "qdisc", "change", "dev", p.veth, "root", "handle", "1:", "tbf", "rate", "5mbit", "burst", "64000", "latency", "25ms")
		}, want: "is shaped by a tbf of rate 625000 B/s"},
		{name: "other rate asked", over: both, check: merge(both, map[string]any{"egressRate": 30_000_000}), want: "asks for a tbf of rate 3750000 B/s"},
		{name: "ifb deleted", over: both, change: func(e *env, p *pod) {
			e.node.Run(e.t, "ip", "link", "del", ifbName("bwnet", p.id))
		}, want: "the pod's egress is not shaped: its ifb " + "bwp"},
		{name: "redirect removed", over: both, change: func(e *env, p *pod) {
			e.node.Run(e.t, "tc", "qdisc", "del", "dev", p.veth, "ingress")
		}, want: "no ingress filter of veth1 redirects the pod's traffic to its ifb"},
		{name: "root qdisc removed", over: ingress10M, change: func(e *env, p *pod) {
			e.node.Run(e.t, "tc", "qdisc", "del", "dev", p.veth, "root")
		}, want: "the root qdisc of veth1 is noqueue; the configuration asks for a tbf"},
		{name: "subnets asked, tbf there", over: both, check: subnets, want: "the configuration asks for an htb shaping all but [10.30.0.0/16]"},
		{name: "other subnets asked", over: subnets, check: merge(both, map[string]any{"unshapedSubnets": []string{"10.40.0.0/16"}}), want: `the configuration asks for ["protocol 0x0800 prio 16 flowid 1:1 match 0a280000/ffff0000 at 12"]`},
		{name: "filter removed", over: subnets, change: func(e *env, p *pod) {
			e.node.Run(e.t, "tc", "filter", "del", "dev", p.veth, "parent", "1:", "prio", "16")
		}, want: "the filters of veth1 are []"},
		{name: "default class changed", over: subnets, check: merge(both, map[string]any{"shapedSubnets": []string{"10.30.0.0/16"}}), want: "sends unmatched traffic to class 1:30"},
		{name: "class changed", over: subnets, change: func(e *env, p *pod) {
			e.node.Run(e.t, "tc", "class", "change", "dev", p.veth, "parent", "1:", "classid", "1:30", "htb", "rate", "5mbit", "burst", "64000")
		}, want: "has no htb class 1:30 of rate 1250000 B/s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			p := e.addPod("10.10.1.2/24")
			res := e.mustAdd(p.args(netConf(t, "1.1.0", p, tt.over)))
			if tt.change != nil {
				tt.change(e, p)
			}
			check := tt.check
			if check == nil {
				check = tt.over
			}
			err := e.check(p.args(withPrev(t, netConf(t, "1.1.0", p, check), res)))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "DEL and ADD the attachment again") {
				t.Fatalf("CHECK: %v, want an error with %q and what to do", err, tt.want)
			}
		})
	}
}

// TestCheckAcceptsReference: a tbf with the reference's overflowed buffer
// (containerd's 512 MB burst at 10 Mbit/s) passes CHECK, as does ours.
func TestCheckAcceptsReference(t *testing.T) {
	e := newEnv(t)
	p := e.addPod("10.10.1.2/24")
	over := map[string]any{"ingressRate": 10_000_000, "ingressBurst": 4294967295}
	conf := netConf(t, "1.1.0", p, over)
	res := e.mustAdd(p.args(conf))
	if err := e.check(p.args(withPrev(t, conf, res))); err != nil {
		t.Fatalf("CHECK of ours: %v", err)
	}
	e.node.Run(t, "tc", "qdisc", "del", "dev", p.veth, "root")
	_, ref := buckets(direction{10_000_000, 4294967295})
	e.node.Do(t, func() error {
		l, err := netlink.LinkByName(p.veth)
		if err != nil {
			return err
		}
		return netlink.QdiscAdd(&netlink.Tbf{QdiscAttrs: rootAttrs(l.Attrs().Index), Rate: ref.rate, Limit: ref.limit, Buffer: ref.buffer})
	})
	if err := e.check(p.args(withPrev(t, conf, res))); err != nil {
		t.Fatalf("CHECK of the reference's: %v", err)
	}
}

// TestDelAfterNetnsGone: DEL finds the ifb by its name, with the pod's
// namespace (and so its veth) gone, or no CNI_NETNS at all.
func TestDelAfterNetnsGone(t *testing.T) {
	e := newEnv(t)
	p := e.addPod("10.10.1.2/24")
	conf := netConf(t, "1.1.0", p, both)
	e.mustAdd(p.args(conf))
	p.ns.Delete(t)
	a := p.args(conf)
	if err := e.del(a); err != nil {
		t.Fatalf("DEL after the netns is gone: %v", err)
	}
	if ifbs := e.node.Links(t, "type", "ifb"); len(ifbs) > 0 {
		t.Fatalf("DEL left %v", ifbs)
	}
	a.Netns = ""
	if err := e.del(a); err != nil {
		t.Fatalf("DEL without CNI_NETNS: %v", err)
	}
	var ne *netconf.Error
	if err := e.check(p.args(conf)); !errors.As(err, &ne) || ne.Code != netconf.CodeUnknownContainer {
		t.Fatalf("CHECK with the netns gone: %v, want code 3", err)
	}
}

// TestGC: GC deletes the ifbs of this network's attachments that are not
// valid, that of an ADD killed before it named the attachment in the alias
// too, and keeps the valid ones', another network's and the reference's
// (which mark none).
func TestGC(t *testing.T) {
	e := newEnv(t)
	keep, stale, other := e.addPod("10.10.1.2/24"), e.addPod("10.10.2.2/24"), e.addPod("10.10.3.2/24")
	e.mustAdd(keep.args(netConf(t, "1.1.0", keep, both)))
	e.mustAdd(stale.args(netConf(t, "1.1.0", stale, both)))
	e.mustAdd(other.args(netConf(t, "1.1.0", other, merge(both, map[string]any{"name": "othernet"}))))
	reference := ifbName("bwnet", "gone")
	e.node.Run(t, "ip", "link", "add", reference, "type", "ifb")
	e.node.Run(t, "ip", "link", "add", ifbName("bwnet", "killed"), "address", ifbMAC("bwnet").String(), "type", "ifb")

	gc := map[string]any{"cni.dev/valid-attachments": []netconf.Attachment{{ContainerID: keep.id, IfName: "eth0"}}}
	if err := e.gc(keep.args(netConf(t, "1.1.0", nil, gc))); err != nil {
		t.Fatal(err)
	}
	got := e.node.Links(t, "type", "ifb")
	slices.Sort(got)
	want := []string{ifbName("bwnet", keep.id), ifbName("othernet", other.id), reference}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after GC: %v, want %v (%s's gone)", got, want, ifbName("bwnet", stale.id))
	}
	if err := e.gc(keep.args(netConf(t, "1.1.0", nil, nil))); err != nil {
		t.Fatal(err)
	}
	if got := e.node.Links(t, "type", "ifb"); len(got) != 2 || slices.Contains(got, ifbName("bwnet", keep.id)) {
		t.Fatalf("after GC with no valid attachment: %v, want only othernet's and the reference's", got)
	}
}

// TestFailedAddLeavesNothing: an ADD failing half-way takes back what it
// did, and only that: what was there before stays.
func TestFailedAddLeavesNothing(t *testing.T) {
	tests := []struct {
		name   string
		over   map[string]any
		before func(e *env, p *pod)
		want   string
	}{
		{"ifb name taken", both, func(e *env, p *pod) {
			e.node.Run(e.t, "ip", "link", "add", ifbName("bwnet", p.id), "type", "ifb")
		}, "was not DELeted: DEL it first"},
		{"veth has an ingress qdisc", merge(both, map[string]any{"shapedSubnets": []string{"10.20.0.0/16"}}), func(e *env, p *pod) {
			e.node.Run(e.t, "tc", "qdisc", "add", "dev", p.veth, "ingress")
		}, "adding the ingress qdisc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			p := e.addPod("10.10.1.2/24")
			tt.before(e, p)
			before := e.state(p)
			_, err := e.add(p.args(netConf(t, "1.1.0", p, tt.over)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ADD: %v, want an error with %q", err, tt.want)
			}
			if after := e.state(p); after != before {
				t.Fatalf("a failed ADD changed the node:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// TestBadInput: every verb refuses a bad configuration or environment with
// its code, before changing anything. DEL and GC need only the name.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	p := e.addPod("10.10.1.2/24")
	type bad struct {
		name   string
		a      *cniplugin.Args
		code   uint
		delToo bool
	}
	var cases []bad
	for _, b := range badConfs {
		cases = append(cases, bad{b.name, p.args(b.conf), b.code, b.delToo})
	}
	noNetns := p.args(netConf(t, "1.1.0", p, both))
	noNetns.Netns = "/run/netns/bw-does-not-exist"
	notVeth := p.args(netConf(t, "1.1.0", p, both))
	notVeth.IfName = "lo"
	noIface := p.args(netConf(t, "1.1.0", p, both))
	noIface.IfName = "eth9"
	unlisted := p.result()
	unlisted.Interfaces[0].Name = "other"
	cases = append(cases,
		bad{"no prevResult", p.args(netConf(t, "1.1.0", nil, both)), netconf.CodeInvalidConfig, false},
		bad{"netns gone", noNetns, netconf.CodeUnknownContainer, false},
		bad{"not a veth", notVeth, netconf.CodeInvalidConfig, false},
		bad{"no such interface in the pod", noIface, netconf.CodeInvalidConfig, false},
		bad{"veth not in prevResult", p.args(withPrev(t, netConf(t, "1.1.0", nil, both), unlisted)), netconf.CodeInvalidConfig, false},
	)
	before := e.state(p)
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			_, addErr := e.add(tt.a)
			verbs := map[string]error{"ADD": addErr, "CHECK": e.check(tt.a)}
			if tt.delToo {
				verbs["DEL"], verbs["GC"] = e.del(tt.a), e.gc(tt.a)
			}
			for verb, err := range verbs {
				var ne *netconf.Error
				if !errors.As(err, &ne) || ne.Code != tt.code {
					t.Errorf("%s: %v, want code %d", verb, err, tt.code)
				}
			}
			if after := e.state(p); after != before {
				t.Fatalf("refused input changed the node:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// TestSpecVersions: ADD reads a prevResult of each version and returns
// the ifb in the runtime's version; CHECK (0.4.0 on) and DEL follow.
func TestSpecVersions(t *testing.T) {
	for _, ver := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			e := newEnv(t)
			p := e.addPod("10.10.1.2/24", "fd00:10:1::2/64")
			conf := netConf(t, ver, p, both)
			res := e.mustAdd(p.args(conf))
			out, err := res.GetAsVersion(ver)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(out)
			contains(t, "result", string(b), `"cniVersion":"`+ver+`"`, `"name":"`+ifbName("bwnet", p.id)+`"`, `"10.10.1.2/24"`, `"fd00:10:1::2/64"`)
			if ver != "0.3.1" {
				if err := e.check(p.args(withPrev(t, conf, res))); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if err := e.del(p.args(conf)); err != nil {
				t.Fatal(err)
			}
		})
	}
}
