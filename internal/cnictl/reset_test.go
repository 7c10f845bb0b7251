package cnictl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
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
	if err := syscall.Mkfifo(filepath.Join(dir, "70-fifo.conflist"), 0o600); err != nil { // skipped, not waited on
		t.Fatal(err)
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
	data := network(t, netnstest.New(t, "cni-ctl-node")) // cbr0: .2 alive, .3 gone, .4 a bare ID, .5 empty, .6 corrupt
	if err := os.MkdirAll(filepath.Join(data, "notastore"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &resetPlan{}
	stores, err := p.planStores(data)
	if err != nil || len(stores) != 0 || len(p.pods) != 0 {
		t.Fatalf("with records that are not host-local's: %v, %v, pods %q; want none kept", stores, err, p.pods)
	}
	want := []string{
		filepath.Join(data, "cbr0") + ": not a host-local store: 10.1.0.5: named by an address but holds no reservation record",
		filepath.Join(data, "notastore") + ": not a host-local store: holds no host-local lock file",
	}
	if !reflect.DeepEqual(p.kept, want) {
		t.Errorf("kept %q\nwant %q", p.kept, want)
	}
	for _, f := range []string{"10.1.0.5", "10.1.0.6"} {
		if err := os.Remove(filepath.Join(data, "cbr0", f)); err != nil {
			t.Fatal(err)
		}
	}
	// What a DEL killed between the index's invalidation and its new stamp leaves.
	if err := os.WriteFile(filepath.Join(data, "cbr0", ".cnisuite", "index"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p = &resetPlan{}
	if stores, err = p.planStores(data); err != nil || len(stores) != 1 || stores[0].path != filepath.Join(data, "cbr0") {
		t.Fatalf("stores %+v, %v; want cbr0", stores, err)
	}
	if len(p.pods) != 1 || !regexp.MustCompile(`^container alive in /run/netns/cni-ctl-pod-\w+ holds 10.1.0.2 of cbr0$`).MatchString(p.pods[0]) {
		t.Errorf("live owners %q, want the alive one only", p.pods)
	}
	if s, err := p.planStores(filepath.Join(data, "missing")); s != nil || err != nil {
		t.Errorf("a missing dataDir: %v, %v; want nothing", s, err)
	}
}

// tree is every file under a root as a path, its type and content (a
// symlink's target), to tell what reset changed.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			out[path] = "-> " + target
			return err
		case d.Type()&fs.ModeNamedPipe != 0:
			out[path] = "fifo"
		case d.IsDir():
			out[path] = "dir"
		default:
			data, err := os.ReadFile(path)
			out[path] = string(data)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// victimNode lays out, in a temp dir, real stores of the suite beside files
// of other programs that look like candidates: a host-local dataDir that
// is /var/lib (dpkg's directory with its lock), a directory with host-local's
// entries but for a symlink, a subnetFile that is a directory, another that
// is someone's environment file, symlinks pointing outside. It returns the
// options, what reset must remove, and the root.
func victimNode(t *testing.T) (resetOpts, []string, string) {
	root := t.TempDir()
	j := func(p ...string) string { return filepath.Join(append([]string{root}, p...)...) }
	varLib, flannel, cache, run := j("var", "lib"), j("flannel"), j("cache"), j("run")
	files := map[string]string{
		j("outside", "secret"):                                "not the suite's",
		j("outside", "conf.json"):                             `{"cniVersion":"1.0.0","name":"mynet","type":"bridge"}`,
		j("outside", "cache.json"):                            `{"kind":"cniCacheV1","networkName":"mynet"}`,
		filepath.Join(varLib, "dpkg", "lock"):                 "",
		filepath.Join(varLib, "dpkg", "status"):               "Package: cni\n",
		filepath.Join(varLib, "dpkg", "info", "cni.list"):     "/usr/bin/x\n",
		filepath.Join(varLib, "lookalike", "lock"):            "",
		filepath.Join(varLib, "lookalike", "10.0.0.5"):        "ctr\r\neth0",
		filepath.Join(varLib, "fulllock", "lock"):             "1234\n",
		filepath.Join(varLib, "fulllock", "10.0.0.7"):         "ctr",
		filepath.Join(varLib, "afile"):                        "x",
		filepath.Join(varLib, "refnet", "lock"):               "",
		filepath.Join(varLib, "refnet", "10.2.0.2"):           "bareid",
		filepath.Join(varLib, "refnet", "last_reserved_ip.0"): "10.2.0.2",
		filepath.Join(varLib, "refnet", ".reserve-12345"):     "killed\r\neth1",
		filepath.Join(run, "subnet.env", "keep"):              "FLANNEL_SUBNET=10.244.3.1/24\n",
		filepath.Join(run, "locale"):                          "LANG=C.UTF-8\n",
		filepath.Join(run, "real.env"):                        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\n",
		filepath.Join(run, "portmap.lock"):                    "",
		filepath.Join(flannel, "abc-eth0"):                    `{"cniVersion":"1.0.0","name":"mynet","type":"bridge"}`,
		filepath.Join(flannel, "notes.txt"):                   "not ours",
		filepath.Join(cache, "results", "mynet-abc-eth0"):     `{"kind":"cniCacheV1","networkName":"mynet"}`,
		filepath.Join(cache, "results", "other-abc-eth0"):     `{"kind":"cniCacheV1","networkName":"other"}`,
	}
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		filepath.Join(varLib, "dpkg", "link"):           j("outside", "secret"),
		filepath.Join(varLib, "lookalike", "10.0.0.6"):  j("outside", "secret"),
		filepath.Join(varLib, "alink"):                  j("outside"),
		filepath.Join(flannel, "evil-eth0"):             j("outside", "conf.json"),
		filepath.Join(cache, "results", "mynet-x-eth0"): j("outside", "cache.json"),
	}
	for p, target := range links {
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(flannel, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A store as the suite leaves it: records, notes and the index.
	s, err := disk.Open(varLib, "cbr0")
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range []string{"10.1.0.2", "10.1.0.3"} {
		c := ipam.Claim{Owner: ipam.Owner{ContainerID: fmt.Sprint("ctr", i), IfName: "eth0"}}
		if ok, err := s.Reserve(netip.MustParseAddr(a), c, 0); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if err := s.Release(netip.MustParseAddr("10.1.0.3")); err != nil || s.Close() != nil {
		t.Fatal(err)
	}
	confs := map[string]string{
		"10-mynet.conflist":  `{"name":"mynet","cniVersion":"1.0.0","plugins":[{"type":"bridge","ipam":{"type":"host-local","dataDir":"` + varLib + `"}}]}`,
		"20-fl.conflist":     `{"name":"fl","cniVersion":"1.0.0","plugins":[{"type":"flannel","subnetFile":"` + filepath.Join(run, "subnet.env") + `","ipam":{"dataDir":"` + varLib + `"}}]}`,
		"30-locale.conflist": `{"name":"fl2","cniVersion":"1.0.0","plugins":[{"type":"flannel","subnetFile":"` + filepath.Join(run, "locale") + `","ipam":{"dataDir":"` + varLib + `"}}]}`,
	}
	for name, data := range confs {
		if err := os.MkdirAll(j("net.d"), 0o755); err != nil || os.WriteFile(j("net.d", name), []byte(data), 0o644) != nil {
			t.Fatal(err)
		}
	}
	o := resetOpts{confDir: j("net.d"), dataDir: varLib, flannelDir: flannel, subnetFile: filepath.Join(run, "real.env"),
		cacheDir: cache, lockFile: filepath.Join(run, "portmap.lock")}
	ours := []string{filepath.Join(varLib, "cbr0"), filepath.Join(varLib, "refnet"), filepath.Join(run, "real.env"), filepath.Join(run, "portmap.lock"),
		filepath.Join(flannel, "abc-eth0"), filepath.Join(cache, "results", "mynet-abc-eth0")}
	return o, ours, root
}

// TestResetKeepsWhatIsNotOurs: reset removes the suite's stores and files
// and nothing else: not dpkg's directory for its lock file, not a directory
// of host-local's entries with a symlink among them, not a subnetFile that
// is a directory or another program's file, no symlink nor what it points
// to. Each kept candidate is listed with why, in the dry run and the real one.
func TestResetKeepsWhatIsNotOurs(t *testing.T) {
	o, ours, root := victimNode(t)
	before := tree(t, root)
	cfg, err := readSuiteConfs(o)
	if err != nil {
		t.Fatal(err)
	}
	varLib, run := o.dataDir, filepath.Dir(o.lockFile)
	wantKept := []string{
		"kept " + filepath.Join(varLib, "afile") + ": not a host-local store: a regular file, not a directory",
		"kept " + filepath.Join(varLib, "alink") + ": not a host-local store: a symlink, not a directory",
		"kept " + filepath.Join(varLib, "dpkg") + ": not a host-local store: info: not a name host-local uses",
		"kept " + filepath.Join(varLib, "fulllock") + ": not a host-local store: lock: not empty",
		"kept " + filepath.Join(varLib, "lookalike") + ": not a host-local store: 10.0.0.6: a symlink",
		"kept " + filepath.Join(o.flannelDir, "evil-eth0") + ": not a flannel saved configuration: a symlink",
		"kept " + filepath.Join(o.flannelDir, "fifo") + ": not a flannel saved configuration: a FIFO",
		"kept " + filepath.Join(o.flannelDir, "notes.txt") + ": not a flannel saved configuration: not a JSON configuration with a cniVersion",
		"kept " + filepath.Join(o.cacheDir, "results", "mynet-x-eth0") + ": not a cached result: a symlink",
		"kept " + filepath.Join(run, "subnet.env") + ": a directory",
		"kept " + filepath.Join(run, "locale") + ": not a subnet.env with a subnet",
	}
	for _, dry := range []bool{true, false} {
		o.dryRun = dry
		p := &resetPlan{}
		if err := p.planFiles(o, cfg); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := runReset(&env{stdout: &out}, o, p); err != nil {
			t.Fatalf("dry run %v: %v\n%s", dry, err, out.String())
		}
		for _, w := range wantKept {
			if !strings.Contains(out.String(), w+"\n") {
				t.Errorf("dry run %v does not list %q:\n%s", dry, w, out.String())
			}
		}
		for _, w := range ours {
			if !regexp.MustCompile(`(?m)^(would remove|removing) [a-z -]+ ` + regexp.QuoteMeta(w) + `$`).MatchString(out.String()) {
				t.Errorf("dry run %v does not list %s for removal:\n%s", dry, w, out.String())
			}
		}
		if n := strings.Count(out.String(), "remov"); n != len(ours)+map[bool]int{true: 0, false: 1}[dry] {
			t.Errorf("dry run %v: %d removals listed, want %d:\n%s", dry, n, len(ours), out.String())
		}
	}
	after := tree(t, root)
	for path, was := range before {
		gone := slices.ContainsFunc(ours, func(o string) bool { return path == o || strings.HasPrefix(path, o+"/") })
		if now, ok := after[path]; gone && ok {
			t.Errorf("reset left %s", path)
		} else if !gone && now != was {
			t.Errorf("reset changed %s, which is not the suite's: %q -> %q", path, was, now)
		}
	}
}

// TestRemoveOnlyWhatWasProved: between the plan and the removal, a record
// replaced by another file is kept, and so is a store that gained an entry
// (its proved entries go, the directory and the newcomer stay).
func TestRemoveOnlyWhatWasProved(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		for f, data := range map[string]string{"lock": "", "10.0.0.2": "ctr\r\neth0"} {
			if err := os.WriteFile(filepath.Join(dir, name, f), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, whyA := proveStore(filepath.Join(dir, "a"))
	b, whyB := proveStore(filepath.Join(dir, "b"))
	if whyA != "" || whyB != "" {
		t.Fatal(whyA, whyB)
	}
	replaced := filepath.Join(dir, "a", "10.0.0.2")
	if err := os.Rename(filepath.Join(dir, "a", "lock"), replaced); err != nil {
		t.Fatal(err)
	}
	newcomer := filepath.Join(dir, "b", "someone's")
	if err := os.WriteFile(newcomer, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.remove(); err == nil || !strings.Contains(err.Error(), "kept "+replaced+": replaced") {
		t.Errorf("a replaced record: %v", err)
	}
	if _, err := os.Stat(replaced); err != nil {
		t.Errorf("the file that replaced a record was removed: %v", err)
	}
	if err := b.remove(); err == nil || !strings.Contains(err.Error(), "entries appeared") {
		t.Errorf("a store that gained an entry: %v", err)
	}
	if got := tree(t, filepath.Join(dir, "b")); !reflect.DeepEqual(got, map[string]string{filepath.Join(dir, "b"): "dir", newcomer: "x"}) {
		t.Errorf("the store that gained an entry holds %v, want only the newcomer", got)
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
	hostRules := hostrules.Rules{Masq: true, Forward: true, Nets: []hostrules.Net{
		{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24")},
		{Network: netip.MustParsePrefix("fd00:244::/56"), Subnet: netip.MustParsePrefix("fd00:244:0:3::/64")}}}
	n.ns.Do(t, func() error {
		return errors.Join(hostrules.IPTables{}.Apply(context.Background(), hostRules), hostrules.NFTables{}.Apply(context.Background(), hostRules))
	})
	subnet := filepath.Join(n.conf, "..", "subnet.env")
	write := map[string]string{
		subnet:                                  "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n",
		filepath.Join(n.flannel, "abc-eth0"):    `{"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}`,
		filepath.Join(n.flannel, "notes.txt"):   "not ours",
		filepath.Join(n.data, "someone", "x"):   "not a host-local store: no lock file",
		filepath.Join(n.data, "dpkg", "lock"):   "", // host-local's lock file name, not its store
		filepath.Join(n.data, "dpkg", "status"): "Package: cni",
		n.lock:                                  "",
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
	for _, s := range []string{"cni0", "cnitest1", "flannel.1", "CNI-HOSTPORT-DNAT", "CNI-DN-", "FLANNEL-POSTRTG", "FLANNEL-FWD", "table ip cni_hostport", "table ip6 cni_hostport", "table ip flannel-ipv4", "table ip6 flannel-ipv6", "table inet cni_plugins_masquerade"} {
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
		"would remove nft table ip flannel-ipv4", "would remove nft table ip6 flannel-ipv6",
		"would remove nft table inet cni_plugins_masquerade",
		"would remove host-local store " + filepath.Join(n.data, "testnet"), "would remove flannel saved config " + filepath.Join(n.flannel, "abc-eth0"),
		"would remove file " + n.lock, "would remove file " + extra[1], "would remove cached result " + filepath.Join(n.cache, "results", "testnet-cnictl-"),
		"kept " + filepath.Join(n.data, "dpkg") + ": not a host-local store: status: not a name host-local uses",
		"kept " + filepath.Join(n.flannel, "notes.txt") + ": not a flannel saved configuration: not a JSON configuration with a cniVersion",
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
	for _, p := range []string{filepath.Join(n.flannel, "notes.txt"), filepath.Join(n.data, "someone", "x"), filepath.Join(n.data, "dpkg", "lock"), filepath.Join(n.data, "dpkg", "status")} {
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
