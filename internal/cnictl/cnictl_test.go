package cnictl

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/ipam/stale"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestDispatch(t *testing.T) {
	data := t.TempDir()
	tests := []struct {
		args   []string
		code   int
		stderr string // stdout for help asked for
	}{
		{nil, 2, "cnictl: missing command"},
		{[]string{"help"}, 0, "cnictl ipam ls"},
		{[]string{"ipam"}, 2, "cnictl ipam: missing command"},
		{[]string{"ipam", "--help"}, 0, "cnictl ipam gc NETWORK"},
		{[]string{"ipam", "frob"}, 2, `unknown command "frob"`},
		{[]string{"doctor", "extra"}, 2, "doctor takes no operands"},
		{[]string{"doctor", "--frob"}, 2, "flag provided but not defined: -frob"},
		{[]string{"help"}, 0, "cnictl doctor [--json]"},
		{[]string{"nope"}, 2, `cnictl: unknown command "nope"`},
		{[]string{"ipam", "ls", "a", "b"}, 2, "at most one NETWORK"},
		{[]string{"ipam", "ls", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"ipam", "ls", "-h"}, 0, "-data-dir"},
		{[]string{"ipam", "gc", "--data-dir", data}, 2, "takes one NETWORK"},
		{[]string{"ipam", "ls", "--data-dir", filepath.Join(data, "missing")}, 1, "pass the ipam section's dataDir with --data-dir"},
		{[]string{"ipam", "gc", "cbr0", "--data-dir", data}, 1, `network "cbr0" has no reservations in ` + data},
		{[]string{"ipam", "ls", "--data-dir", data, "../x"}, 1, "cannot name a directory"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := run(tt.args...)
			if code == 0 {
				stderr = stdout + stderr // flag's own -h help goes to its output, stderr
			}
			if code != tt.code || !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tt.code, tt.stderr)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(data, "cbr0")); !os.IsNotExist(err) {
		t.Fatalf("looking at a missing network created it: %v", err)
	}
}

// podNetns is the identity host-local records for a pod namespace added
// from node: gone when the namespace was freed, else alive.
func podNetns(t *testing.T, node *netnstest.NS, gone bool) ipam.Netns {
	t.Helper()
	pod := netnstest.New(t, "cni-ctl-pod")
	var id ipam.Netns
	node.Do(t, func() error { id = stale.Identify(pod.Path); return nil })
	if gone {
		pod.Delete(t)
	}
	return id
}

// network makes cbr0 with one reservation in each state, as seen from
// node: .2 alive, .3 gone (its namespace freed), .4 unknown (legacy record,
// no proof), .5 gone (empty record), .6 corrupt.
func network(t *testing.T, node *netnstest.NS) string {
	t.Helper()
	data := t.TempDir()
	s, err := disk.Open(data, "cbr0")
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]ipam.Claim{
		"10.1.0.2": {Owner: ipam.Owner{ContainerID: "alive", IfName: "eth0"}, Netns: podNetns(t, node, false)},
		"10.1.0.3": {Owner: ipam.Owner{ContainerID: "dead", IfName: "eth0"}, Netns: podNetns(t, node, true)},
	}
	for a, c := range claims {
		if ok, err := s.Reserve(netip.MustParseAddr(a), c, 0); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	s.Close()
	for name, content := range map[string]string{"10.1.0.4": "old", "10.1.0.5": "", "10.1.0.6": "\x00"} {
		if err := os.WriteFile(filepath.Join(data, "cbr0", name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

// runIn runs cnictl in node's namespace, where the reservations' nsids are.
func runIn(t *testing.T, node *netnstest.NS, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	node.Do(t, func() error { code, stdout, stderr = run(args...); return nil })
	return code, stdout, stderr
}

func TestIPAMLs(t *testing.T) {
	node := netnstest.New(t, "cni-ctl-node")
	data := network(t, node)
	code, out, stderr := runIn(t, node, "ipam", "ls", "--data-dir", data)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := []string{
		"NETWORK  ADDRESS",
		"cbr0     10.1.0.2  alive/eth0",
		"alive    0s",
		"cbr0     10.1.0.3  dead/eth0",
		"gone     0s",
		"cbr0     10.1.0.4  old/*       -",
		"unknown  0s   no namespace recorded",
		"cbr0     10.1.0.5  -",
		"empty record",
		"cbr0     10.1.0.6  -",
		"corrupt",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}
	code, out, _ = runIn(t, node, "ipam", "ls", "cbr0", "--json", "--data-dir", data)
	var rows []row
	if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 || len(rows) != 5 {
		t.Fatalf("--json: exit %d, %v:\n%s", code, err, out)
	}
	states := ""
	for _, r := range rows {
		states += r.State + " "
	}
	if states != "alive gone unknown gone corrupt " || rows[0].Netns == "" || rows[0].Since == nil {
		t.Fatalf("--json rows: %+v", rows)
	}
}

func TestIPAMGC(t *testing.T) {
	node := netnstest.New(t, "cni-ctl-node")
	data := network(t, node)
	records := func() string { return strings.Join(reservations(t, filepath.Join(data, "cbr0")), " ") }
	code, out, _ := runIn(t, node, "ipam", "gc", "cbr0", "--dry-run", "--data-dir", data)
	if code != 0 || !strings.Contains(out, "cbr0: would release 2 of 5 reservations; kept 1 alive, 1 unknown, 1 corrupt") {
		t.Fatalf("dry run: exit %d:\n%s", code, out)
	}
	if got := records(); got != "10.1.0.2 10.1.0.3 10.1.0.4 10.1.0.5 10.1.0.6" {
		t.Fatalf("the dry run released something: %s", got)
	}
	code, out, _ = runIn(t, node, "ipam", "gc", "--json", "--data-dir", data, "cbr0")
	var rep gcReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || rep.DryRun || len(rep.Reclaimed) != 2 || len(rep.Kept) != 3 {
		t.Fatalf("gc: exit %d, %v:\n%s", code, err, out)
	}
	if rep.Reclaimed[0].Address != "10.1.0.3" || rep.Reclaimed[1].Address != "10.1.0.5" {
		t.Fatalf("reclaimed %+v", rep.Reclaimed)
	}
	if got := records(); got != "10.1.0.2 10.1.0.4 10.1.0.6" {
		t.Fatalf("after gc: %s", got)
	}
}

// TestIPAMLsBlocked: entries named like an address that are no record (a
// directory, a FIFO, a symbolic link) keep that address from being handed
// out: ls lists them as blocked with what to do, never following the link
// nor opening the FIFO, and gc leaves them.
func TestIPAMLsBlocked(t *testing.T) {
	node := netnstest.New(t, "cni-ctl-node")
	data := network(t, node)
	dir := filepath.Join(data, "cbr0")
	target := filepath.Join(t.TempDir(), "victim")
	must(t, os.WriteFile(target, []byte("alive\r\neth0"), 0o600))
	must(t, os.Mkdir(filepath.Join(dir, "10.1.0.7"), 0o755))
	must(t, unix.Mkfifo(filepath.Join(dir, "10.1.0.8"), 0o600))
	must(t, os.Symlink(target, filepath.Join(dir, "10.1.0.9")))
	done := make(chan struct{})
	var code int
	var out string
	go func() {
		defer close(done)
		code, out, _ = runIn(t, node, "ipam", "ls", "cbr0", "--json", "--data-dir", data)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ipam ls hangs (opened the FIFO?)")
	}
	var rows []row
	if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 || len(rows) != 8 {
		t.Fatalf("--json: exit %d, %v:\n%s", code, err, out)
	}
	for i, kind := range []string{"a directory", "a named pipe (FIFO)", "a symbolic link"} {
		r := rows[5+i]
		if r.State != "blocked" || r.ContainerID != "" || !strings.HasPrefix(r.Reason, kind+", not a reservation record") || !strings.Contains(r.Reason, "remove it by hand") {
			t.Errorf("row %s: %+v, want blocked by %s", r.Address, r, kind)
		}
	}
	code, out, _ = runIn(t, node, "ipam", "gc", "cbr0", "--data-dir", data)
	if code != 0 || !strings.Contains(out, "kept 1 alive, 1 unknown, 1 corrupt, 3 blocked") {
		t.Fatalf("gc: exit %d:\n%s", code, out)
	}
	for _, name := range []string{"10.1.0.7", "10.1.0.8", "10.1.0.9"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			t.Errorf("gc removed %s: %v", name, err)
		}
	}
	if got, _ := os.ReadFile(target); string(got) != "alive\r\neth0" {
		t.Errorf("the link's target now holds %q", got)
	}
}

// reservations lists the record files of a network directory.
func reservations(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestAge(t *testing.T) {
	now := time.Date(2025, 1, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"}, {-time.Second, "0s"}, {45 * time.Second, "45s"}, {12*time.Minute + 5*time.Second, "12m"},
		{3*time.Hour + 20*time.Minute, "3h20m"}, {98 * time.Hour, "4d2h"},
	}
	for _, tt := range tests {
		since := now.Add(-tt.ago)
		if got := age(&since, now); got != tt.want {
			t.Errorf("age(%v) = %s, want %s", tt.ago, got, tt.want)
		}
	}
	if got := age(nil, now); got != "-" {
		t.Errorf("age(nil) = %s", got)
	}
}
