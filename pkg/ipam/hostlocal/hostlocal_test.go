package hostlocal

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
)

var ctx = context.Background()

func args(id, ifname, stdin string) *cniplugin.Args {
	return &cniplugin.Args{ContainerID: id, IfName: ifname, Netns: "/run/netns/x", StdinData: []byte(stdin)}
}

func add(t *testing.T, a *cniplugin.Args) *current.Result {
	t.Helper()
	res, err := Plugin{}.Add(ctx, a)
	if err != nil {
		t.Fatalf("ADD %s/%s: %v", a.ContainerID, a.IfName, err)
	}
	return res.(*current.Result)
}

func addrs(r *current.Result) string {
	var s []string
	for _, ip := range r.IPs {
		s = append(s, ip.Address.String()+" gw "+ip.Gateway.String())
	}
	return strings.Join(s, ", ")
}

// files lists the network's directory, sorted, without the index
// (.cnisuite/), whose attachment files indexed counts.
func files(t *testing.T, dataDir string) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "net1"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != ".cnisuite" {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}

// indexed counts the attachments of the network's index.
func indexed(t *testing.T, dataDir string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "net1", ".cnisuite", "owners"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func wantCode(t *testing.T, err error, code uint, sub string) {
	t.Helper()
	var ne *netconf.Error
	if !errors.As(err, &ne) || ne.Code != code || !strings.Contains(err.Error(), sub) {
		t.Fatalf("err = %v, want code %d containing %q", err, code, sub)
	}
}

func TestAddCheckDelDualStack(t *testing.T) {
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 10.0.0.10\nsearch svc.local\n"), 0o644)
	c := conf(dir, `"resolvConf":`+quote(resolv)+`,"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120","gateway":"fd00::fe"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd00::fe"}]`)
	r := add(t, args("c1", "eth0", c))
	if got, want := addrs(r), "10.1.0.2/24 gw 10.1.0.1, fd00::1/120 gw fd00::fe"; got != want {
		t.Fatalf("ADD: %s, want %s", got, want)
	}
	if len(r.Routes) != 2 || r.Routes[1].GW.String() != "fd00::fe" || r.Routes[0].GW != nil || r.DNS.Nameservers[0] != "10.0.0.10" || r.DNS.Search[0] != "svc.local" {
		t.Fatalf("routes/dns: %+v %+v", r.Routes, r.DNS)
	}
	if got, want := files(t, dir), "10.1.0.2 fd00::1 last_reserved_ip.0 last_reserved_ip.1 lock"; got != want {
		t.Fatalf("files %q, want %q", got, want)
	}
	r2 := add(t, args("c2", "eth0", c))
	if got, want := addrs(r2), "10.1.0.3/24 gw 10.1.0.1, fd00::2/120 gw fd00::fe"; got != want {
		t.Fatalf("second ADD: %s, want %s", got, want)
	}

	withPrev := strings.TrimSuffix(c, "}") + `,"prevResult":` + resultJSON(t, r) + `}`
	if err := (Plugin{}).Check(ctx, args("c1", "eth0", withPrev)); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := (Plugin{}).Check(ctx, args("c2", "eth0", withPrev)); err == nil || !strings.Contains(err.Error(), "10.1.0.2 is reserved for container c1 interface eth0, not for container c2 interface eth0") {
		t.Fatalf("CHECK of another attachment's addresses: %v", err)
	}
	if err := (Plugin{}).Check(ctx, args("c2", "eth0", c)); err != nil {
		t.Fatalf("CHECK without prevResult: %v", err)
	}

	for range 2 { // DEL is idempotent
		if err := (Plugin{}).Del(ctx, args("c1", "eth0", c)); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	if err := (Plugin{}).Check(ctx, args("c1", "eth0", withPrev)); err == nil || !strings.Contains(err.Error(), "10.1.0.2 of container c1 interface eth0 is not reserved") {
		t.Fatalf("CHECK after DEL: %v", err)
	}
	if err := (Plugin{}).Check(ctx, args("c1", "eth0", c)); err == nil {
		t.Fatal("CHECK without prevResult after DEL succeeded")
	}
	if got, want := files(t, dir), "10.1.0.3 fd00::2 last_reserved_ip.0 last_reserved_ip.1 lock"; got != want {
		t.Fatalf("files after DEL %q, want %q", got, want)
	}
	if n := indexed(t, dir); n != 1 {
		t.Fatalf("%d attachments indexed after DEL, want 1", n)
	}
}

func quote(s string) string { return `"` + s + `"` }

func resultJSON(t *testing.T, r *current.Result) string {
	t.Helper()
	var b strings.Builder
	if err := r.PrintTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestAddRequestedIPs(t *testing.T) {
	dir := t.TempDir()
	c := conf(dir, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`, `"runtimeConfig":{"ips":["fd00::50"]}`)
	a := args("c1", "eth0", c)
	a.Args = "IP=10.1.0.50"
	if got, want := addrs(add(t, a)), "10.1.0.50/24 gw 10.1.0.1, fd00::50/120 gw fd00::1"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	// Taken: the error names the owner, and nothing of the failed ADD stays.
	b := args("c2", "eth0", conf(dir, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`))
	b.Args = "IP=fd00::50"
	before := files(t, dir)
	_, err := Plugin{}.Add(ctx, b)
	wantCode(t, err, netconf.CodeInvalidConfig, "requested IP fd00::50 is already reserved for container c1 interface eth0")
	if after := files(t, dir); after != before || indexed(t, dir) != 1 {
		t.Fatalf("failed ADD left files: %q (%d indexed), before %q", after, indexed(t, dir), before)
	}
	b.Args = "IP=10.9.0.1"
	_, err = Plugin{}.Add(ctx, b)
	wantCode(t, err, netconf.CodeInvalidConfig, "outside every range")
	b.Args = "IP=10.1.0.1"
	_, err = Plugin{}.Add(ctx, b)
	wantCode(t, err, netconf.CodeInvalidConfig, "is the gateway of subnet 10.1.0.0/24")
}

func TestAddExhaustionRollsBack(t *testing.T) {
	dir := t.TempDir()
	// Set 0 has room; set 1 holds one address: the second ADD gets an
	// address from set 0 and must give it back when set 1 is full.
	c := conf(dir, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/30"}]]`)
	add(t, args("c1", "eth0", c))
	before := files(t, dir)
	_, err := Plugin{}.Add(ctx, args("c2", "eth0", c))
	if err == nil || !strings.Contains(err.Error(), "no IP addresses available in network: net1") || !strings.Contains(err.Error(), "range set 1 (10.2.0.1-10.2.0.2)") {
		t.Fatalf("err = %v", err)
	}
	if cniplugin.ToCNIError(err).Code != netconf.CodeInternal {
		t.Fatalf("code %d", cniplugin.ToCNIError(err).Code)
	}
	if after := files(t, dir); after != before || indexed(t, dir) != 1 {
		t.Fatalf("failed ADD left %q (%d indexed), before %q", after, indexed(t, dir), before)
	}
	wantCode(t, Plugin{}.Status(ctx, args("", "", c)), netconf.CodeExhausted, "range set 1")
	if err := (Plugin{}).Del(ctx, args("c1", "eth0", c)); err != nil {
		t.Fatal(err)
	}
	if err := (Plugin{}).Status(ctx, args("", "", c)); err != nil {
		t.Fatalf("STATUS after DEL: %v", err)
	}
}

func TestAddTwiceWithoutDel(t *testing.T) {
	c := conf(t.TempDir(), `"subnet":"10.1.0.0/24"`)
	add(t, args("c1", "eth0", c))
	if _, err := (Plugin{}).Add(ctx, args("c1", "eth0", c)); err == nil || !strings.Contains(err.Error(), "run DEL for it first") {
		t.Fatalf("second ADD: %v", err)
	}
	add(t, args("c1", "eth1", c)) // another interface is another attachment
}

func TestDelLegacyAndInvalidRanges(t *testing.T) {
	dir := t.TempDir()
	c := conf(dir, `"subnet":"10.1.0.0/24"`)
	add(t, args("c0", "eth0", c))
	os.WriteFile(filepath.Join(dir, "net1", "10.1.0.9"), []byte("c1"), 0o600) // written by an old reference version
	// The ranges were since edited into something invalid: DEL still works.
	bad := conf(dir, `"subnet":"10.1.0.0/33"`)
	if err := (Plugin{}).Del(ctx, args("c1", "eth0", bad)); err != nil {
		t.Fatal(err)
	}
	if got := files(t, dir); got != "10.1.0.2 last_reserved_ip.0 lock" {
		t.Fatalf("files %q", got)
	}
	// Even ranges of another JSON type: DEL reads only where the records are.
	if err := (Plugin{}).Del(ctx, args("c0", "eth0", conf(dir, `"ranges":"10.1.0.0/24"`))); err != nil {
		t.Fatal(err)
	}
	if got := files(t, dir); got != "last_reserved_ip.0 lock" {
		t.Fatalf("files %q", got)
	}
	if err := (Plugin{}).Del(ctx, args("c1", "eth0", `{"name":"net1"`)); err == nil {
		t.Fatal("DEL with unreadable JSON succeeded")
	}
}

func TestGC(t *testing.T) {
	setup := func(t *testing.T) (string, string) {
		dir := t.TempDir()
		c := conf(dir, `"subnet":"10.1.0.0/24"`)
		for _, a := range []*cniplugin.Args{args("c1", "eth0", c), args("c1", "eth1", c), args("c2", "eth0", c)} {
			add(t, a) // .2 .3 .4
		}
		d := filepath.Join(dir, "net1")
		os.WriteFile(filepath.Join(d, "10.1.0.20"), []byte("c3"), 0o600)       // legacy
		os.WriteFile(filepath.Join(d, "10.1.0.21"), nil, 0o600)                // empty: reclaimed
		os.WriteFile(filepath.Join(d, "10.1.0.22"), []byte("\x00\x01"), 0o600) // corrupt: reclaimed
		os.WriteFile(filepath.Join(d, ".reserve-9"), []byte("c9"), 0o600)      // left by a crash
		return dir, c
	}
	tests := []struct {
		name   string
		valid  string // JSON list, "" = key absent
		want   string
		owners int // attachments left in the index (the legacy c3 is one)
	}{
		{"absent", "", "", 0},
		{"empty", `[]`, "", 0},
		{"partial", `[{"containerID":"c1","ifname":"eth1"},{"containerID":"c3","ifname":"eth7"}]`, "10.1.0.20 10.1.0.3", 2},
		{"full", `[{"containerID":"c1","ifname":"eth0"},{"containerID":"c1","ifname":"eth1"},{"containerID":"c2","ifname":"eth0"},{"containerID":"c3","ifname":"eth0"}]`, "10.1.0.2 10.1.0.20 10.1.0.3 10.1.0.4", 4},
	}
	for _, key := range []string{"cni.dev/valid-attachments", "cni.dev/attachments"} {
		for _, tt := range tests {
			t.Run(key+"/"+tt.name, func(t *testing.T) {
				dir, c := setup(t)
				gc := c
				if tt.valid != "" {
					gc = conf(dir, `"subnet":"10.1.0.0/24"`, quote(key)+":"+tt.valid)
				}
				if err := (Plugin{}).GC(ctx, args("", "", gc)); err != nil {
					t.Fatal(err)
				}
				want := strings.TrimSpace(tt.want + " last_reserved_ip.0 lock")
				if got := files(t, dir); got != want {
					t.Fatalf("after GC %q, want %q", got, want)
				}
				if got, want := indexed(t, dir), tt.owners; got != want {
					t.Fatalf("after GC %d attachments indexed, want %d", got, want)
				}
			})
		}
	}
}

func TestStatus(t *testing.T) {
	dir := t.TempDir()
	c := conf(dir, `"ranges":[[{"subnet":"10.1.0.0/30"}]]`)
	if err := (Plugin{}).Status(ctx, args("", "", c)); err != nil {
		t.Fatalf("STATUS of a fresh network: %v", err)
	}
	add(t, args("c1", "eth0", c))
	wantCode(t, Plugin{}.Status(ctx, args("", "", c)), netconf.CodeExhausted, "no IP addresses available in network: net1")

	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	wantCode(t, Plugin{}.Status(ctx, args("", "", conf(file, `"subnet":"10.1.0.0/24"`))), netconf.CodeUnavailable, "make the dataDir exist and be writable")
	wantCode(t, Plugin{}.Status(ctx, args("", "", conf(dir, `"subnet":"10.1.0.0/99"`))), netconf.CodeInvalidConfig, "not a CIDR")
}

// TestAddRefusesAnUnrecordableOwner: a container ID so long that its record
// could not be read back (and its address never released) is refused with
// code 4 before anything is written.
func TestAddRefusesAnUnrecordableOwner(t *testing.T) {
	dataDir := t.TempDir()
	c := conf(dataDir, `"subnet":"10.1.0.0/24"`)
	_, err := Plugin{}.Add(ctx, args(strings.Repeat("c", 4095), "eth0", c))
	wantCode(t, err, netconf.CodeInvalidEnv, "use a shorter container ID")
	if _, err := os.Stat(filepath.Join(dataDir, "net1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the network's directory after the refused ADD: %v, want none", err)
	}
	add(t, args(strings.Repeat("c", 4000), "eth0", c)) // long, but its record fits
}
