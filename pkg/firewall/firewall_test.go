package firewall

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/iptablestest"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// ruleset is everything the firewall could have written in ns: both
// iptables families (without counters) and its nftables table.
func ruleset(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	s := iptablestest.Ruleset(t, ns, "iptables-save") + iptablestest.Ruleset(t, ns, "ip6tables-save")
	if strings.Contains(ns.Run(t, "nft", "list", "tables"), "table inet cnisuite_firewall") {
		s += ns.Run(t, "nft", "list", "table", "inet", "cnisuite_firewall")
	}
	return s
}

// TestVerbs runs every key through ADD, CHECK, DEL, DEL again, DEL after
// the pod's namespace is gone and GC, with both rule backends, in a node
// namespace: CHECK passes after ADD and fails after DEL, and DEL leaves no
// rule of the attachment.
func TestVerbs(t *testing.T) {
	tests := []struct {
		name, keys string
		has        []string // in the ruleset after ADD
	}{
		{"defaults", ``, []string{"-j CNI-ADMIN", "-s 10.1.0.5/32 -m comment", "-s fd00::5/128 -m comment"}},
		{"admin chain", `"iptablesAdminChainName":"MY-ADMIN",`, []string{":MY-ADMIN", "-j MY-ADMIN"}},
		{"same-bridge", `"ingressPolicy":"same-bridge",`, []string{"-i cni0 ! -o cni0 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\""}},
		{"isolated", `"ingressPolicy":"isolated",`, []string{"-i cni0 -o cni0 -m comment --comment \"CNI firewall plugin rules (ingressPolicy: isolated)\" -j DROP"}},
		{"open, firewalldZone ignored", `"ingressPolicy":"open","firewalldZone":"public",`, []string{"-j CNI-FORWARD"}},
		{"nftables", `"backend":"nftables",`, []string{"ip saddr 10.1.0.5 accept comment \"firewall name: net id: c1 ifname: eth0\"", "jump CNI-ADMIN"}},
		{"nftables isolated", `"backend":"nftables","ingressPolicy":"isolated","iptablesAdminChainName":"MY-ADMIN",`,
			[]string{"iifname \"cni0\" oifname \"cni0\" drop", "jump MY-ADMIN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := netnstest.New(t, "fw-node")
			// No firewalld: without a backend key the plugin takes iptables.
			p, ctx := &Plugin{bus: "unix:path=" + t.TempDir() + "/none"}, context.Background()
			conf := confWith(tt.keys, prev)
			var res any
			node.Do(t, func() (err error) { res, err = p.Add(ctx, args(conf)); return err })
			if res == nil {
				t.Fatal("ADD returned no result")
			}
			rules := ruleset(t, node)
			for _, s := range tt.has {
				if !strings.Contains(rules, s) {
					t.Errorf("after ADD the ruleset lacks %q:\n%s", s, rules)
				}
			}
			node.Do(t, func() error { return p.Check(ctx, args(conf)) })
			node.Do(t, func() error { return p.Del(ctx, args(conf)) })
			if rules := ruleset(t, node); strings.Contains(rules, "firewall name:") {
				t.Errorf("after DEL:\n%s", rules)
			}
			var err error
			node.Do(t, func() error { err = p.Check(ctx, args(conf)); return nil })
			if err == nil {
				t.Error("CHECK passes after DEL")
			}
			gone := args(confWith(tt.keys, ""))
			gone.Netns = "/run/netns/fw-gone-never-was"
			node.Do(t, func() error { return p.Del(ctx, args(conf)) })
			node.Do(t, func() error { return p.Del(ctx, gone) })
			node.Do(t, func() error { return p.GC(ctx, args(confWith(`"cni.dev/valid-attachments":[],`, ""))) })
		})
	}
}

// TestGC: GC removes the rules of this network's attachments that are
// not valid, from both backends, and keeps the valid ones' and another
// network's.
func TestGC(t *testing.T) {
	node := netnstest.New(t, "fw-gc")
	p, ctx := &Plugin{bus: "unix:path=" + t.TempDir() + "/none"}, context.Background()
	add := func(network, backend, id string) {
		a := args(strings.Replace(confWith(`"backend":"`+backend+`",`, prev), `"name":"net"`, `"name":"`+network+`"`, 1))
		a.ContainerID = id
		node.Do(t, func() error { _, err := p.Add(ctx, a); return err })
	}
	add("net", "iptables", "gone1")
	add("net", "nftables", "gone2")
	add("net", "iptables", "kept1")
	add("net", "nftables", "kept2")
	add("net2", "iptables", "other")
	valid := `"cni.dev/valid-attachments":[{"containerID":"kept1","ifname":"eth0"},{"containerID":"kept2","ifname":"eth0"}],`
	node.Do(t, func() error { return p.GC(ctx, args(confWith(valid, ""))) })
	rules := ruleset(t, node)
	for _, id := range []string{"gone1", "gone2"} {
		if strings.Contains(rules, "id: "+id+" ") {
			t.Errorf("GC kept %s's rules:\n%s", id, rules)
		}
	}
	for _, id := range []string{"kept1", "kept2", "other"} {
		if !strings.Contains(rules, "id: "+id+" ") {
			t.Errorf("GC removed %s's rules:\n%s", id, rules)
		}
	}
}

// TestFailedAddLeavesNothing: an ADD whose nftables transaction the
// kernel refuses (the admin chain is a base chain, which no rule may jump
// to) changes nothing, and its error says what failed.
func TestFailedAddLeavesNothing(t *testing.T) {
	node := netnstest.New(t, "fw-fail")
	node.Run(t, "nft", "add table inet cnisuite_firewall")
	node.Run(t, "nft", "add chain inet cnisuite_firewall CNI-ADMIN { type filter hook forward priority 10 ; }")
	before := ruleset(t, node)
	var err error
	node.Do(t, func() error {
		_, err = (&Plugin{}).Add(context.Background(), args(confWith(`"backend":"nftables",`, prev)))
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "firewall (nftables)") {
		t.Fatalf("ADD over a conflicting FORWARD chain: %v", err)
	}
	if after := ruleset(t, node); after != before {
		t.Errorf("a failed ADD left:\n%s\nwant:\n%s", after, before)
	}
}

// TestSpecVersions: ADD passes the prevResult through in the
// configuration's version, as the runtime reads it.
func TestSpecVersions(t *testing.T) {
	prevs := map[string]string{
		"0.3.1": `{"cniVersion":"0.3.1","interfaces":[{"name":"cni0"}],"ips":[{"version":"4","address":"10.1.0.5/24","interface":0}]}`,
		"0.4.0": `{"cniVersion":"0.4.0","interfaces":[{"name":"cni0"}],"ips":[{"version":"4","address":"10.1.0.5/24","interface":0}]}`,
		"1.0.0": `{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"}],"ips":[{"address":"10.1.0.5/24","interface":0}]}`,
		"1.1.0": `{"cniVersion":"1.1.0","interfaces":[{"name":"cni0"}],"ips":[{"address":"10.1.0.5/24","interface":0}]}`,
	}
	for v, pr := range prevs {
		t.Run(v, func(t *testing.T) {
			p, f := recorder()
			conf := strings.Replace(confWith(`"backend":"iptables",`, pr), `"cniVersion":"1.1.0","name"`, `"cniVersion":"`+v+`","name"`, 1)
			res, err := p.Add(context.Background(), args(conf))
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := cniplugin.PrintResult(&out, res, v); err != nil {
				t.Fatal(err)
			}
			var got struct {
				CNIVersion string           `json:"cniVersion"`
				IPs        []map[string]any `json:"ips"`
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil || len(got.IPs) != 1 {
				t.Fatalf("%v: %s", err, out.Bytes())
			}
			_, hasVersion := got.IPs[0]["version"]
			if got.CNIVersion != v || hasVersion != (v < "1.0.0") || got.IPs[0]["address"] != "10.1.0.5/24" {
				t.Errorf("result in %s:\n%s", v, out.String())
			}
			if !strings.Contains(f.Payload("iptables-restore"), "10.1.0.5/32") {
				t.Errorf("no rule for the %s prevResult's address", v)
			}
		})
	}
}

// TestFirewalldWithoutBus: with backend firewalld and no system bus, ADD,
// CHECK and STATUS are code 50 naming the missing bus and the backends to
// use instead, and change nothing; DEL succeeds (firewalld's sources are
// gone with it); without a backend key the plugin takes iptables, as the
// reference does when firewalld is not running.
func TestFirewalldWithoutBus(t *testing.T) {
	node := netnstest.New(t, "fw-nobus")
	p := &Plugin{bus: "unix:path=" + t.TempDir() + "/system_bus_socket"}
	ctx, conf := context.Background(), confWith(`"backend":"firewalld",`, prev)
	var errs [3]error
	node.Do(t, func() error {
		_, errs[0] = p.Add(ctx, args(conf))
		errs[1] = p.Check(ctx, args(conf))
		errs[2] = p.Status(ctx, args(confWith(`"backend":"firewalld",`, "")))
		return p.Del(ctx, args(conf))
	})
	for i, err := range errs {
		var ne *netconf.Error
		if !errors.As(err, &ne) || ne.Code != netconf.CodeUnavailable ||
			!strings.Contains(err.Error(), "system bus is not running (no socket at ") || !strings.Contains(err.Error(), `"backend": "iptables"`) {
			t.Errorf("verb %d: %v, want code 50 naming the bus", i, err)
		}
	}
	if rules := ruleset(t, node); strings.Contains(rules, "firewall") || strings.Contains(rules, "CNI-") {
		t.Errorf("a refused ADD left:\n%s", rules)
	}
	node.Do(t, func() error { _, err := p.Add(ctx, args(confWith("", prev))); return err })
	if rules := ruleset(t, node); !strings.Contains(rules, "-s 10.1.0.5/32 -m comment") {
		t.Errorf("without a backend key and firewalld, no iptables rules:\n%s", rules)
	}
}
