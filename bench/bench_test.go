package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestSummarize(t *testing.T) {
	seq := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[n-1-i] = float64(i + 1) // descending: summarize must sort
		}
		return v
	}
	for _, tc := range []struct {
		name     string
		in       []float64
		med, p95 float64
	}{
		{"one", []float64{7}, 7, 7},
		{"even", []float64{4, 1, 3, 2}, 2.5, 4},
		{"odd", []float64{5, 1, 3}, 3, 5},
		{"twenty", seq(20), 10.5, 19},
		{"hundred", seq(100), 50.5, 95},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := summarize(tc.in)
			if got.med != tc.med || got.p95 != tc.p95 {
				t.Errorf("summarize(%v) = %+v, want med %g p95 %g", tc.in, got, tc.med, tc.p95)
			}
		})
	}
	if got := summarize(nil); !math.IsNaN(got.med) {
		t.Errorf("summarize(nil).med = %g, want NaN", got.med)
	}
}

func TestRowResult(t *testing.T) {
	for _, tc := range []struct {
		name       string
		r          row
		wantRatio  string
		wantResult string
	}{
		{"faster met", row{ref: single(20), ours: single(8), target: 0.5}, "0.40", "met"},
		{"slower missed", row{ref: single(20), ours: single(12), target: 0.5}, "0.60", "MISSED"},
		{"on the bound", row{ref: single(10), ours: single(5), target: 0.5}, "0.50", "met"},
		{"pods/s met", row{ref: single(20), ours: single(70), target: 3, better: higherBetter}, "3.50", "met"},
		{"pods/s missed", row{ref: single(20), ours: single(50), target: 3, better: higherBetter}, "2.50", "MISSED"},
		{"no target", row{ref: single(20), ours: single(50)}, "2.50", ""},
		{"missing reference", row{ref: single(math.NaN()), ours: single(5), target: 0.5}, "", "MISSED"},
		{"leaks met", row{leaks: &[2]leaks{{1, 0, 0}, {}}}, "", "met"},
		{"leaks missed", row{leaks: &[2]leaks{{}, {0, 0, 2}}}, "", "MISSED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.r.cells()
			if len(c) != len(header) {
				t.Fatalf("%d cells, %d columns", len(c), len(header))
			}
			if c[4] != tc.wantRatio || c[9] != tc.wantResult {
				t.Errorf("ratio %q result %q, want %q %q", c[4], c[9], tc.wantRatio, tc.wantResult)
			}
		})
	}
}

func TestOrder(t *testing.T) {
	for _, n := range []int{2, 3} {
		first := make([]int, n)
		for i := range 6 {
			o := order(i, n)
			if s := slices.Sorted(slices.Values(o)); !slices.Equal(s, order(0, n)) {
				t.Fatalf("order(%d, %d) = %v, not every participant once", i, n, o)
			}
			first[o[0]]++
		}
		for k, c := range first {
			if c != 6/n {
				t.Errorf("n=%d: participant %d went first %d times in 6, want %d", n, k, c, 6/n)
			}
		}
	}
}

// TestModeRows checks the rows of the cnitool driver and of the floor: their
// labels, their figures and the targets they carry.
func TestModeRows(t *testing.T) {
	ms := func(add, del float64) map[verb][]float64 {
		return map[verb][]float64{verbAdd: {add}, verbCheck: {add}, verbDel: {del}}
	}
	res := scenarioResult{
		sc:    scenario{name: "s", target: targets{add: 0.5, cnitoolAdd: 0.3, cnitoolDel: 0.3}},
		seq:   [2]map[verb][]float64{ms(20, 30), ms(9, 15)},
		floor: ms(6, 12),
		tool:  [2]map[verb][]float64{ms(40, 50), ms(10, 20)},
	}
	want := map[string][3]string{ // metric: ratio, target, result
		"ADD ms":                {"0.45", "≤ 0.5", "met"},
		"ADD ms, ours vs floor": {"1.50", "≤ 1.5", "met"},
		"DEL ms, ours vs floor": {"1.25", "≤ 1.5", "met"},
		"ADD ms (cnitool)":      {"0.25", "≤ 0.3", "met"},
		"DEL ms (cnitool)":      {"0.40", "≤ 0.3", "MISSED"},
	}
	seen := 0
	for _, r := range scenarioRows(res) {
		w, ok := want[r.metric]
		if !ok {
			continue
		}
		seen++
		if c := r.cells(); c[4] != w[0] || c[8] != w[1] || c[9] != w[2] {
			t.Errorf("%s: ratio %q target %q result %q, want %q", r.metric, c[4], c[8], c[9], w)
		}
	}
	if seen != len(want) {
		t.Errorf("%d of the %d rows wanted", seen, len(want))
	}
}

func TestSplice(t *testing.T) {
	gen := func(s string) string { return beginMarker + "\n" + s + endMarker }
	for _, tc := range []struct{ name, doc, want string }{
		{"empty", "", gen("new") + "\n"},
		{"no markers", "# B\n\nprose", "# B\n\nprose\n" + gen("new") + "\n"},
		{"replace", "# B\n" + gen("old\n") + "\nafter\n", "# B\n" + gen("new") + "\nafter\n"},
		{"end before begin", endMarker + "x" + beginMarker, endMarker + "x" + beginMarker + "\n" + gen("new") + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := splice(tc.doc, "new"); got != tc.want {
				t.Errorf("splice:\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestLeakedRules(t *testing.T) {
	base := ruleset{}
	base.addSave("iptables-save", "*nat\n:PREROUTING ACCEPT [3:180]\n:CNI-HOSTPORT-DNAT - [0:0]\n-A PREROUTING -j CNI-HOSTPORT-DNAT\nCOMMIT\n")
	for _, tc := range []struct {
		name string
		save string
		want int
	}{
		{"unchanged but counters", "*nat\n:PREROUTING ACCEPT [9:540]\n:CNI-HOSTPORT-DNAT - [0:0]\n-A PREROUTING -j CNI-HOSTPORT-DNAT\nCOMMIT\n", 0},
		{"shared rules gone too", "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", 0},
		{"new chain and rule", "*nat\n:PREROUTING ACCEPT [0:0]\n:CNI-DN-1 - [0:0]\n-A CNI-DN-1 -j DNAT\nCOMMIT\n", 2},
		{"same rule twice", "*nat\n-A PREROUTING -j CNI-HOSTPORT-DNAT\n-A PREROUTING -j CNI-HOSTPORT-DNAT\nCOMMIT\n", 1},
		{"same text other table", "*filter\n-A PREROUTING -j CNI-HOSTPORT-DNAT\nCOMMIT\n", 1},
		{"names a pod", "*nat\n-A PREROUTING -j CNI-HOSTPORT-DNAT\n-A X -m comment --comment \"id: cnibench-ours-warm\"\nCOMMIT\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := ruleset{}
			now.addSave("iptables-save", tc.save)
			if got := leakedRules(base, now, []string{"cnibench-ours-warm"}); got != tc.want {
				t.Errorf("leakedRules = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestLeakCount leaves one of each kind of leak behind in a node and checks
// that the count sees every one: the smoke test's "zero leaks" means
// something only if it does.
func TestLeakCount(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	nss := &namespaces{}
	t.Cleanup(func() { _ = nss.deleteAll() })
	ctx := t.Context()
	tag := fmt.Sprintf("cnibt%d", os.Getpid())
	node, err := nss.add(ctx, tag+"-node")
	if err != nil {
		t.Fatal(err)
	}
	pod, err := nss.add(ctx, tag+"-pod")
	if err != nil {
		t.Fatal(err)
	}
	s := &sideRun{side: side{name: "ours"}, node: node, pods: []*namespace{pod}, dataDir: t.TempDir()}
	if s.linksBefore, err = node.linkNames(); err != nil {
		t.Fatal(err)
	}
	// The shared chain exists before the baseline, as after a warm-up pod:
	// it and the nat table it brings are not leaks.
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", node.name, "iptables", "-t", "nat", "-N", "CNI-SHARED").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if s.rulesBase, err = readRules(ctx, node); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"lock", "last_reserved_ip.0", "10.244.1.2"} {
		if err := os.WriteFile(filepath.Join(s.dataDir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	steps := [][]string{
		{"ip", "-n", node.name, "link", "add", "cni0", "type", "bridge"}, // shared: not a leak
		{"ip", "-n", node.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", pod.name},
		{"ip", "netns", "exec", node.name, "iptables", "-t", "nat", "-N", "CNI-LEFT"},
	}
	for _, st := range steps {
		if out, err := exec.CommandContext(ctx, st[0], st[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", st, err, out)
		}
	}
	got, err := s.leaks(ctx, []string{"cni0"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (leaks{reservations: 1, links: 2, rules: 1}); got != want {
		t.Errorf("leaks = %v, want %v (reservations+links+rules)", got, want)
	}
}

// TestSmoke runs every scenario and the start-up figures with a pod or two,
// our binaries on both sides, and checks that the harness runs to the end,
// fills every row and leaves nothing behind. `make bench` measures for real.
func TestSmoke(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	tool, err := checkHost()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := buildOurs(t.Context(), "..", dir); err != nil {
		t.Fatal(err)
	}
	cfg := config{pods: 2, concPods: 3, workers: 2, rounds: 1, startupN: 2, criPods: 1, repo: "..", rssTool: tool,
		drivers: []string{driverLibcni, driverCnitool}, cnitoolPods: 2}
	if cfg.tools, err = buildTools(t.Context(), cfg, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	sides := [2]side{{name: "reference", dir: dir}, {name: "ours", dir: dir}}
	out, err := measureAll(t.Context(), cfg, sides, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := out.failures(); err != nil {
		t.Fatal(err)
	}
	for _, s := range out.scenarios {
		if s.skipped != "" {
			t.Logf("%s: %s", s.sc.name, s.skipped)
			continue
		}
		if s.leaks[0].total() != 0 {
			t.Errorf("%s: %v left behind on the first side", s.sc.name, s.leaks[0])
		}
	}
	checkRows(t, out.rows)
	checkModeRows(t, out.scenarios, out.rows)
	checkNoNamespaces(t)
}

// checkModeRows fails unless every scenario that ran has the cnitool
// driver's rows, and those with a floor program their rows vs floor.
func checkModeRows(t *testing.T, ran []scenarioResult, rows []row) {
	t.Helper()
	has := map[string]bool{}
	for _, r := range rows {
		has[r.scenario+"|"+r.metric] = true
	}
	for _, res := range ran {
		sc := res.sc
		if res.skipped != "" {
			continue
		}
		want := []string{"ADD ms (cnitool)", "DEL ms (cnitool)"}
		if sc.floor != nil {
			want = append(want, "ADD ms, ours vs floor", "DEL ms, ours vs floor")
		}
		for _, m := range want {
			if !has[sc.name+"|"+m] {
				t.Errorf("%s: no row %q", sc.name, m)
			}
		}
	}
}

// checkRows fails on a row of figures with an empty cell that should hold one.
func checkRows(t *testing.T, rows []row) {
	t.Helper()
	if len(rows) == 0 {
		t.Fatal("no rows")
	}
	for _, r := range rows {
		c := r.cells()
		if r.status != "" || r.leaks != nil {
			continue
		}
		if c[2] == "" || c[3] == "" || c[4] == "" {
			t.Errorf("row %q %q has empty figures: %q", r.scenario, r.metric, c)
		}
		if r.target != 0 && c[9] == "" {
			t.Errorf("row %q %q has a target and no result", r.scenario, r.metric)
		}
	}
	var b strings.Builder
	if err := writeText(&b, rows); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
}

func checkNoNamespaces(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir("/run/netns")
	prefix := fmt.Sprintf("cnib%d-", os.Getpid())
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
}

// TestPinnedThread checks that what the cnitool driver starts sees the run's
// directory as /var/lib and sits in the node, while the bench's own /var/lib
// and namespace stay as they were: cnitool's cache must never reach the
// machine's /var/lib/cni.
func TestPinnedThread(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	node := netnstest.New(t, "cnibt-pin")
	varLib := t.TempDir()
	th, err := startPinnedThread(node.Path, varLib)
	if err != nil {
		t.Fatal(err)
	}
	defer th.close()
	inode := func(path string) string {
		out, err := exec.Command("stat", "-L", "-c", "%d:%i", path).Output()
		if err != nil {
			t.Fatalf("stat %s: %v", path, err)
		}
		return strings.TrimSpace(string(out))
	}
	var lib, net string
	var libErr, netErr error
	th.run(func() {
		var out []byte
		out, libErr = exec.Command("stat", "-c", "%d:%i", "/var/lib").Output()
		lib = strings.TrimSpace(string(out))
		out, netErr = exec.Command("stat", "-L", "-c", "%d:%i", "/proc/self/ns/net").Output()
		net = strings.TrimSpace(string(out))
	})
	if libErr != nil || netErr != nil {
		t.Fatal(libErr, netErr)
	}
	if want := inode(varLib); lib != want {
		t.Errorf("the thread's children see /var/lib as %s, want the run's directory %s", lib, want)
	}
	if want := inode(node.Path); net != want {
		t.Errorf("the thread's children are in namespace %s, want the node's %s", net, want)
	}
	if own := inode("/var/lib"); own == inode(varLib) {
		t.Error("the bind mount shows in the bench's own mount namespace")
	}
}
