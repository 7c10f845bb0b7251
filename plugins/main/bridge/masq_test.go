package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// The bridge binary runs inside a node namespace as a runtime runs it; an
// "outside" namespace joined to the node by a veth holds a server that
// answers with the address a connection came from. The outside knows no
// route to the pods, so a pod reaches it only masqueraded, as the node.
const (
	nodeV4 = "198.51.100.1"
	outV4  = "198.51.100.2"
	nodeV6 = "2001:db8:1::1"
	outV6  = "2001:db8:1::2"
)

func TestMain(m *testing.M) { testutil.Main(m) }

type node struct {
	t       *testing.T
	ns, out *netnstest.NS
	bin     string
	dataDir string
}

func newNode(t *testing.T) *node {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	n := &node{t: t, ns: netnstest.New(t, "masq-node"), out: netnstest.New(t, "masq-out"),
		bin: testutil.Plugins(t, "plugins/main/bridge"), dataDir: t.TempDir()}
	for _, ns := range []*netnstest.NS{n.ns, n.out} {
		ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	n.ns.Run(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", n.out.Name)
	n.ns.Run(t, "ip", "addr", "add", nodeV4+"/24", "dev", "up0")
	n.ns.Run(t, "ip", "addr", "add", nodeV6+"/64", "dev", "up0", "nodad")
	n.out.Run(t, "ip", "addr", "add", outV4+"/24", "dev", "up1")
	n.out.Run(t, "ip", "addr", "add", outV6+"/64", "dev", "up1", "nodad")
	n.ns.Run(t, "ip", "link", "set", "up0", "up")
	n.out.Run(t, "ip", "link", "set", "up1", "up")
	serveSource(t, n.out)
	return n
}

// serveSource answers each TCP connection on port 80 with its source
// address.
func serveSource(t *testing.T, ns *netnstest.NS) {
	var l net.Listener
	ns.Do(t, func() error {
		var err error
		l, err = net.Listen("tcp", ":80")
		return err
	})
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprint(c, host)
			c.Close()
		}
	}()
}

// sourceSeen connects from ns to the outside server and returns the
// source address the server saw.
func sourceSeen(ns *netnstest.NS, server string) (string, error) {
	var c net.Conn
	err := netns.Do(ns.Path, func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 2 * time.Second}).Dial("tcp", net.JoinHostPort(server, "80"))
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// conf is a dual-stack bridge network with ipMasq; backend "" leaves
// ipMasqBackend out.
func (n *node) conf(backend string) map[string]any {
	c := map[string]any{"cniVersion": "1.1.0", "name": "masqnet", "type": "bridge", "bridge": "masqbr0",
		"isDefaultGateway": true, "ipMasq": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": n.dataDir,
			"ranges": []any{[]any{map[string]any{"subnet": "10.88.0.0/24"}}, []any{map[string]any{"subnet": "fd88::/64"}}}}}
	if backend != "" {
		c["ipMasqBackend"] = backend
	}
	return c
}

// pod is a pod namespace attached by the binary; prev is its ADD result.
type pod struct {
	id   string
	ns   *netnstest.NS
	prev json.RawMessage
}

// call runs the bridge binary inside the node, with the PATH given (the
// test's own when ""); p nil is a verb without an attachment (GC).
func (n *node) call(cmd string, p *pod, conf map[string]any, path string) (string, error) {
	if path == "" {
		path = os.Getenv("PATH")
	}
	stdin, err := json.Marshal(conf)
	if err != nil {
		n.t.Fatal(err)
	}
	c := exec.Command("ip", "netns", "exec", n.ns.Name, filepath.Join(n.bin, "bridge"))
	c.Env = []string{"PATH=" + path, "CNI_COMMAND=" + cmd, "CNI_PATH=" + n.bin}
	if p != nil {
		c.Env = append(c.Env, "CNI_CONTAINERID="+p.id, "CNI_NETNS="+p.ns.Path, "CNI_IFNAME=eth0")
	}
	c.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("bridge %s: %w: %s %s", cmd, err, out.String(), errOut.String())
	}
	return out.String(), nil
}

func (n *node) mustCall(cmd string, p *pod, conf map[string]any, path string) string {
	n.t.Helper()
	out, err := n.call(cmd, p, conf, path)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

func (n *node) add(id string, conf map[string]any, path string) *pod {
	n.t.Helper()
	p := &pod{id: id, ns: netnstest.New(n.t, "masq-pod")}
	p.ns.Run(n.t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	p.prev = json.RawMessage(n.mustCall("ADD", p, conf, path))
	return p
}

func withKey(conf map[string]any, key string, value any) map[string]any {
	c := map[string]any{key: value}
	for k, v := range conf {
		if k != key {
			c[k] = v
		}
	}
	return c
}

// nftRules lists the attachment rules of masq_checks in the node.
func (n *node) nftRules() []string {
	out, err := n.ns.Try("nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks")
	if err != nil {
		return nil // no table
	}
	var rules []string
	for line := range strings.Lines(out) {
		if strings.Contains(line, " masquerade ") {
			rules = append(rules, strings.TrimSpace(line))
		}
	}
	return rules
}

var countersRE = regexp.MustCompile(`\[\d+:\d+\]`)

// iptablesNAT is both families' nat tables, without counters and comments.
func (n *node) iptablesNAT() string {
	var b strings.Builder
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		for line := range strings.Lines(n.ns.Run(n.t, save, "-t", "nat")) {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(countersRE.ReplaceAllString(line, ""))
			}
		}
	}
	return b.String()
}

// rulesOf tells which backends hold rules of the pod.
func (n *node) rulesOf(p *pod) (ipt, nft bool) {
	for _, r := range n.nftRules() {
		nft = nft || strings.Contains(r, "id: "+p.id+`"`)
	}
	return strings.Contains(n.iptablesNAT(), `id: \"`+p.id+`\"`), nft
}

// masqueraded fails unless the pod reaches the outside in both families
// as the node.
func masqueraded(t *testing.T, p *pod) {
	t.Helper()
	for server, want := range map[string]string{outV4: nodeV4, outV6: nodeV6} {
		if got, err := sourceSeen(p.ns, server); err != nil || got != want {
			t.Errorf("pod %s to %s: seen from %q, %v; want the node's %s", p.id, server, got, err, want)
		}
	}
}

// TestIPMasqBackends runs ADD, CHECK, DEL, DEL with each backend, chosen
// by ipMasqBackend or by default, and requires masquerading to work and
// nothing of the attachment to remain. Without ipMasqBackend the plugin
// takes iptables, or nftables when iptables-restore is not in its PATH.
func TestIPMasqBackends(t *testing.T) {
	noIPTables := t.TempDir() // a PATH where the plugin finds no iptables
	for _, tc := range []struct {
		name, backend, path string
		wantNFT             bool
	}{
		{"iptables", "iptables", "", false},
		{"nftables", "nftables", "", true},
		{"default", "", "", false},
		{"default without iptables-restore in PATH", "", noIPTables, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			natBefore := n.iptablesNAT()
			conf := n.conf(tc.backend)
			p := n.add("c1", conf, tc.path)
			if ipt, nft := n.rulesOf(p); ipt == tc.wantNFT || nft != tc.wantNFT {
				t.Fatalf("after ADD, rules in iptables %v, in nftables %v; want them in nftables: %v\n%s\n%s", ipt, nft, tc.wantNFT, n.iptablesNAT(), n.nftRules())
			}
			if tc.wantNFT && n.iptablesNAT() != natBefore {
				t.Errorf("the nftables backend changed iptables:\n%s\nwas:\n%s", n.iptablesNAT(), natBefore)
			}
			masqueraded(t, p)
			n.mustCall("CHECK", p, withKey(conf, "prevResult", p.prev), tc.path)
			for range 2 {
				n.mustCall("DEL", p, conf, tc.path)
			}
			if rules := n.nftRules(); len(rules) > 0 {
				t.Errorf("nftables rules left after DEL:\n%s", strings.Join(rules, "\n"))
			}
			if after := n.iptablesNAT(); after != natBefore {
				t.Errorf("iptables after DEL:\n%s\nbefore ADD:\n%s", after, natBefore)
			}
		})
	}
}

// TestIPMasqDelOtherBackend: a DEL removes the attachment's rules that an
// ADD made under a configuration with the other backend.
func TestIPMasqDelOtherBackend(t *testing.T) {
	n := newNode(t)
	natBefore := n.iptablesNAT()
	for _, bs := range [][2]string{{"nftables", "iptables"}, {"iptables", "nftables"}, {"nftables", ""}} {
		p := n.add("c-"+bs[0], n.conf(bs[0]), "")
		if ipt, nft := n.rulesOf(p); !ipt && !nft {
			t.Fatalf("ADD with %s made no rules", bs[0])
		}
		n.mustCall("DEL", p, n.conf(bs[1]), "")
		if ipt, nft := n.rulesOf(p); ipt || nft {
			t.Errorf("ADD with %s, DEL with %q: rules left in iptables %v, in nftables %v", bs[0], bs[1], ipt, nft)
		}
	}
	if after := n.iptablesNAT(); after != natBefore {
		t.Errorf("iptables after the DELs:\n%s\nbefore:\n%s", after, natBefore)
	}
}

// TestIPMasqGC: GC removes the rules of attachments not in the valid
// list, in both backends, and keeps the valid one's.
func TestIPMasqGC(t *testing.T) {
	n := newNode(t)
	natBefore := n.iptablesNAT()
	keep := n.add("gc-keep", n.conf("nftables"), "")
	staleNFT := n.add("gc-stale-nft", n.conf("nftables"), "")
	staleIPT := n.add("gc-stale-ipt", n.conf("iptables"), "")
	valid := []map[string]string{{"containerID": keep.id, "ifname": "eth0"}}
	n.mustCall("GC", nil, withKey(n.conf("nftables"), "cni.dev/valid-attachments", valid), "")
	if _, nft := n.rulesOf(keep); !nft {
		t.Errorf("GC removed the valid attachment's rules:\n%s", n.nftRules())
	}
	for _, p := range []*pod{staleNFT, staleIPT} {
		if ipt, nft := n.rulesOf(p); ipt || nft {
			t.Errorf("%s's rules survived GC: iptables %v, nftables %v", p.id, ipt, nft)
		}
	}
	masqueraded(t, keep)
	for _, p := range []*pod{keep, staleNFT, staleIPT} {
		n.mustCall("DEL", p, n.conf("nftables"), "")
	}
	if rules := n.nftRules(); len(rules) > 0 {
		t.Errorf("nftables rules left:\n%s", strings.Join(rules, "\n"))
	}
	if after := n.iptablesNAT(); after != natBefore {
		t.Errorf("iptables after the DELs:\n%s\nbefore:\n%s", after, natBefore)
	}
}
