package cnictl

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/nat"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestReadSuiteConfs(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"10-flannel.conflist": `{"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"flannel","dataDir":"/x/flannel","subnetFile":"/x/subnet.env","delegate":{"bridge":"fl0"}},{"type":"portmap"}]}`,
		"20-br.conflist":      `{"name":"br","cniVersion":"1.0.0","plugins":[{"type":"bridge","bridge":"br1","ipam":{"type":"host-local","dataDir":"/x/ipam"}}]}`,
		"30-single.conf":      `{"name":"single","cniVersion":"1.0.0","type":"bridge","ipam":{"type":"host-local"}}`,
		"40-macvlan.conflist": `{"name":"mv","cniVersion":"1.0.0","plugins":[{"type":"macvlan","master":"eth0","ipam":{"type":"static"}}]}`,
		"50-other.conflist":   `{"name":"other","cniVersion":"1.0.0","plugins":[{"type":"flannel","delegate":{"type":"ipvlan"}}]}`,
		"60-broken.conflist":  `{"name":`,
		"README":              `{"name":"ignored","type":"bridge","bridge":"nope"}`,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o := resetOpts{confDir: dir, dataDir: "/d", flannelDir: "/f", subnetFile: "/s"}
	c, err := readSuiteConfs(o)
	if err != nil {
		t.Fatal(err)
	}
	want := &suiteConfs{
		networks:    []string{"cbr0", "br", "single", "mv", "other"},
		bridges:     []string{"cni0", "fl0", "br1"},
		dataDirs:    []string{"/d", "/x/ipam"},
		flannelDirs: []string{"/f", "/x/flannel"},
		subnetFiles: []string{"/s", "/x/subnet.env"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
	if _, err := readSuiteConfs(resetOpts{confDir: filepath.Join(dir, "10-flannel.conflist")}); err == nil {
		t.Error("a conf dir that is a file: no error")
	}
}

func TestPlanStores(t *testing.T) {
	data := network(t, netnstest.New(t, "cni-ctl-node")) // cbr0: .2 alive, others gone, unknown or corrupt
	if err := os.MkdirAll(filepath.Join(data, "notastore"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &resetPlan{}
	stores, err := p.planStores(data)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(data, "cbr0")}; !reflect.DeepEqual(stores, want) {
		t.Errorf("stores %v, want %v (a directory without host-local's lock is not one)", stores, want)
	}
	if len(p.pods) != 1 || !regexp.MustCompile(`^container alive in /run/netns/cni-ctl-pod-\w+ holds 10.1.0.2 of cbr0$`).MatchString(p.pods[0]) {
		t.Errorf("live owners %q, want the alive one only", p.pods)
	}
	if s, err := p.planStores(filepath.Join(data, "missing")); s != nil || err != nil {
		t.Errorf("a missing dataDir: %v, %v; want nothing", s, err)
	}
}

// counters are iptables-save's and nft's packet counts, which traffic of
// the kernel's own (neighbour discovery) moves.
var counters = regexp.MustCompile(`\[\d+:\d+\]|counter packets \d+ bytes \d+`)

// snapshot is the node's state as its tools print it, counters and
// comments left out, so that two snapshots of an unchanged node are equal.
func snapshot(t *testing.T, n *execNode) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range [][]string{
		{"ip", "-br", "link", "show"}, {"ip", "-br", "addr", "show"}, {"ip", "-4", "route", "show"}, {"ip", "-6", "route", "show"},
		{"ip", "neigh", "show", "nud", "permanent"}, {"bridge", "fdb", "show", "dev", "flannel.1"},
		{"iptables-save"}, {"ip6tables-save"}, {"nft", "list", "ruleset"},
	} {
		out, _ := n.ns.Try(cmd...)
		for line := range strings.Lines(out) {
			if !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "Cannot find device") {
				b.WriteString(counters.ReplaceAllString(line, ""))
			}
		}
	}
	return b.String()
}

// fullNode makes a node with all the suite can leave: two pods on two
// bridges with masquerade and port mappings in iptables and nftables, both
// families; flannel.1 with an address, a route, a neighbour and an FDB
// entry; subnetd's host rules; state files. Also things reset must keep: an
// operator's nat chain and its jump, a bridge of no network, a file and a
// directory of other programs in the state dirs.
func fullNode(t *testing.T) (*execNode, []string) {
	n := newExecNode(t)
	n.network(t, "20-nftnet.conflist", "nftnet", "cnitest1", "nftables", "10.98.0.0/24", "fd00:98::/64")
	for _, net := range []string{"testnet", "nftnet"} {
		pod := netnstest.New(t, "cnictl-pod")
		n.mustRun(t, "add", net, pod.Name, "--port-mapping", "8080:80/tcp")
	}
	for _, cmd := range [][]string{
		{"ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "nolearning"},
		{"ip", "addr", "add", "10.244.3.0/32", "dev", "flannel.1"},
		{"ip", "link", "set", "flannel.1", "up"},
		{"ip", "route", "add", "10.244.2.0/24", "via", "10.244.2.0", "dev", "flannel.1", "onlink"},
		{"ip", "neigh", "add", "10.244.2.0", "lladdr", "02:00:00:00:02:00", "dev", "flannel.1", "nud", "permanent"},
		{"bridge", "fdb", "append", "02:00:00:00:02:00", "dev", "flannel.1", "dst", "192.0.2.2"},
		{"ip", "link", "add", "keep0", "type", "bridge"},
		{"iptables", "-t", "nat", "-N", "KEEP-ME"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "KEEP-ME"},
	} {
		n.ns.Run(t, cmd...)
	}
	n.ns.Do(t, func() error {
		return nat.FlannelHost{}.Apply(context.Background(), nat.FlannelRules{Masq: true, Forward: true, Nets: []nat.FlannelNet{
			{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24")},
			{Network: netip.MustParsePrefix("fd00:244::/56"), Subnet: netip.MustParsePrefix("fd00:244:0:3::/64")}}})
	})
	subnet := filepath.Join(n.conf, "..", "subnet.env")
	write := map[string]string{
		subnet:                                "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n",
		filepath.Join(n.flannel, "abc-eth0"):  `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}`,
		filepath.Join(n.flannel, "notes.txt"): "not ours",
		filepath.Join(n.data, "someone", "x"): "not a host-local store: no lock file",
		n.lock:                                "",
	}
	for p, data := range write {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return n, []string{"--subnet-file", subnet}
}

func TestResetPrivileged(t *testing.T) {
	n, extra := fullNode(t)
	before := snapshot(t, n)
	for _, s := range []string{"cni0", "cnitest1", "flannel.1", "CNI-HOSTPORT-DNAT", "CNI-DN-", "FLANNEL-POSTRTG", "FLANNEL-FWD", "table ip cni_hostport", "table ip6 cni_hostport"} {
		if !strings.Contains(before, s) {
			t.Fatalf("the node lacks %q before the reset:\n%s", s, before)
		}
	}

	// Pods attached: a dry run lists everything but says a reset would refuse.
	code, out, stderr := n.cnictl(t, append([]string{"reset", "--dry-run"}, extra...)...)
	if code != 1 || !strings.Contains(stderr, "pods are still attached to this node:") || !strings.Contains(stderr, "--force") ||
		!regexp.MustCompile(`veth\w+ on cni0`).MatchString(stderr) || !regexp.MustCompile(`container cnictl-\w+ in /run/netns/cnictl-pod-\w+ holds 10.99.0.2, fd00:99::2 of testnet`).MatchString(stderr) {
		t.Errorf("dry run with pods: exit %d, %q; want 1 and the refusal", code, stderr)
	}
	wantListed := []string{
		"would remove link veth ", "would remove link bridge cni0", "would remove link bridge cnitest1",
		"would remove link vxlan flannel.1", "iptables -t nat chain CNI-HOSTPORT-DNAT", "ip6tables -t nat chain CNI-HOSTPORT-DNAT",
		"iptables -t nat chain FLANNEL-POSTRTG (6 rules, jumps from POSTROUTING)", "ip6tables -t filter chain FLANNEL-FWD",
		"would remove nft table ip cni_hostport", "would remove nft table ip6 cni_hostport",
		"would remove host-local store " + filepath.Join(n.data, "testnet"), "would remove flannel saved config " + filepath.Join(n.flannel, "abc-eth0"),
		"would remove file " + n.lock, "would remove file " + extra[1], "would remove cached result " + filepath.Join(n.cache, "results", "testnet-cnictl-"),
	}
	for _, w := range wantListed {
		if !strings.Contains(out, w) {
			t.Errorf("dry run does not list %q:\n%s", w, out)
		}
	}
	if regexp.MustCompile(`(?m)^would remove rules iptables -t nat chain CNI-[0-9a-f]{24} `).FindString(out) == "" {
		t.Errorf("dry run lists no masquerade chain:\n%s", out)
	}
	for _, args := range [][]string{{"reset", "--dry-run"}, {"reset", "--dry-run", "--force"}, {"reset"}} {
		n.cnictl(t, append(args, extra...)...)
		if after := snapshot(t, n); after != before {
			t.Fatalf("%v changed the node:\n%s", args, lineDiff(before, after))
		}
	}
	if code, _, _ := n.cnictl(t, append([]string{"reset", "--dry-run", "--force"}, extra...)...); code != 0 {
		t.Errorf("dry run with --force: exit %d, want 0", code)
	}

	code, out, stderr = n.cnictl(t, append([]string{"reset", "--force"}, extra...)...)
	if code != 0 {
		t.Fatalf("reset --force: exit %d\n%s%s", code, out, stderr)
	}
	after := snapshot(t, n)
	for _, s := range []string{"cni0", "cnitest1", "flannel", "veth", "CNI-", "FLANNEL", "cni_hostport", "10.244."} {
		if strings.Contains(after, s) {
			t.Errorf("reset left %q:\n%s", s, after)
		}
	}
	for _, s := range []string{"keep0", "-A POSTROUTING -j KEEP-ME"} {
		if !strings.Contains(after, s) {
			t.Errorf("reset removed %q, which is not the suite's:\n%s", s, after)
		}
	}
	checkFiles(t, n, extra[1])

	code, out, _ = n.cnictl(t, append([]string{"reset"}, extra...)...)
	if code != 0 || !strings.Contains(out, "nothing of the suite is left on this node") {
		t.Errorf("second reset: exit %d, %q; want 0 and nothing to do", code, out)
	}
}

// checkFiles asserts the suite's files are gone and the others are not.
func checkFiles(t *testing.T, n *execNode, subnet string) {
	t.Helper()
	for _, p := range []string{filepath.Join(n.data, "testnet"), filepath.Join(n.data, "nftnet"), filepath.Join(n.flannel, "abc-eth0"), n.lock, subnet} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("reset left %s", p)
		}
	}
	results, _ := os.ReadDir(filepath.Join(n.cache, "results"))
	if len(results) > 0 {
		t.Errorf("reset left cached results: %v", results)
	}
	for _, p := range []string{filepath.Join(n.flannel, "notes.txt"), filepath.Join(n.data, "someone", "x")} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("reset removed %s, which is not the suite's: %v", p, err)
		}
	}
}

// lineDiff lists the lines only one of a and b has.
func lineDiff(a, b string) string {
	count := map[string]int{}
	for l := range strings.Lines(a) {
		count[l]++
	}
	for l := range strings.Lines(b) {
		count[l]--
	}
	var out strings.Builder
	for l, n := range count {
		switch {
		case n > 0:
			out.WriteString("- " + l)
		case n < 0:
			out.WriteString("+ " + l)
		}
	}
	return out.String()
}
