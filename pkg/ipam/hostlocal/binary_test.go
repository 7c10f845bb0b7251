package hostlocal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// buildBinary compiles the host-local binary once per test that needs it.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "host-local")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cnisuite/cni/plugins/ipam/host-local").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// run executes one verb; host-local never enters the netns, so any path does.
func run(bin, cmd, id, stdin string) (stdout []byte, err error) {
	c := exec.Command(bin)
	c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID="+id, "CNI_NETNS=/run/netns/none",
		"CNI_IFNAME=eth0", "CNI_PATH=/nonexistent")
	c.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: stdout %s stderr %s", cmd, id, err, out.Bytes(), errb.Bytes())
	}
	return out.Bytes(), nil
}

func TestBinaryParallelAddDel(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	c := conf(dir, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`)
	const n = 64
	addrs := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			out, err := run(bin, "ADD", fmt.Sprintf("c%d", i), c)
			if err != nil {
				errs <- err
				return
			}
			var r struct {
				IPs []struct{ Address string } `json:"ips"`
			}
			if err := json.Unmarshal(out, &r); err != nil || len(r.IPs) != 2 {
				errs <- fmt.Errorf("ADD c%d: result %s: %v", i, out, err)
				return
			}
			addrs[i] = r.IPs[0].Address + " " + r.IPs[1].Address
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		for _, f := range strings.Fields(a) {
			if seen[f] {
				t.Errorf("%s handed out twice", f)
			}
			seen[f] = true
		}
	}
	if len(seen) != 2*n {
		t.Fatalf("%d distinct addresses, want %d", len(seen), 2*n)
	}
	if got := len(strings.Fields(files(t, dir))); got != 2*n+3 {
		t.Fatalf("%d files after %d ADDs, want %d", got, n, 2*n+3)
	}
	for i := range n {
		wg.Go(func() {
			if _, err := run(bin, "DEL", fmt.Sprintf("c%d", i), c); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := files(t, dir); got != "last_reserved_ip.0 last_reserved_ip.1 lock" {
		t.Fatalf("after 64 DELs: %s", got)
	}
}

func TestBinaryVersions(t *testing.T) {
	bin := buildBinary(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			dir := t.TempDir()
			c := strings.Replace(conf(dir, `"subnet":"10.1.0.0/24"`), `"cniVersion":"1.1.0"`, `"cniVersion":"`+v+`"`, 1)
			out, err := run(bin, "ADD", "c1", c)
			if err != nil {
				t.Fatal(err)
			}
			var r struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Version string `json:"version"`
					Address string `json:"address"`
					Gateway string `json:"gateway"`
				} `json:"ips"`
			}
			if err := json.Unmarshal(out, &r); err != nil || r.CNIVersion != v || len(r.IPs) != 1 || r.IPs[0].Address != "10.1.0.2/24" || r.IPs[0].Gateway != "10.1.0.1" {
				t.Fatalf("result %s: %v", out, err)
			}
			if (v == "0.3.1" || v == "0.4.0") != (r.IPs[0].Version == "4") {
				t.Fatalf("version field in %s", out)
			}
			if v != "0.3.1" {
				check := strings.TrimSuffix(c, "}") + `,"prevResult":` + string(out) + `}`
				if _, err := run(bin, "CHECK", "c1", check); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				if _, err := run(bin, "DEL", "c1", c); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestBinaryErrors(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	full := conf(dir, `"subnet":"10.1.0.0/30"`)
	if _, err := run(bin, "ADD", "c1", full); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cmd, id, stdin string
		code                 uint
		msg                  string
	}{
		{"bad cidr", "ADD", "c2", conf(dir, `"subnet":"10.1.0.0/40"`), 7, "is not a CIDR"},
		{"exhausted", "ADD", "c2", full, 999, "no IP addresses available in network: net1"},
		{"status exhausted", "STATUS", "", full, 51, "no IP addresses available in network: net1"},
		{"status unusable", "STATUS", "", conf(file, `"subnet":"10.1.0.0/24"`), 50, "cannot keep reservations"},
		{"gc unusable", "GC", "", conf(file, `"subnet":"10.1.0.0/24"`), 5, "make it a directory the runtime can write): mkdir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(bin, tt.cmd, tt.id, tt.stdin)
			if err == nil {
				t.Fatalf("%s succeeded: %s", tt.cmd, out)
			}
			var e struct {
				Code uint   `json:"code"`
				Msg  string `json:"msg"`
			}
			if jerr := json.Unmarshal(out, &e); jerr != nil || e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("error %s (%v), want code %d containing %q", out, err, tt.code, tt.msg)
			}
		})
	}
}

// TestBinaryInteropWithReference switches a network between the reference
// plugin and ours mid-life, as a node upgrade (and a downgrade) does; our
// index must follow what the reference did behind its back. It needs a
// reference host-local binary: set HOSTLOCAL_REFERENCE_BIN to its path
// (GOBIN=/tmp/ref go install github.com/containernetworking/plugins/plugins/ipam/host-local@v1.9.1).
func TestBinaryInteropWithReference(t *testing.T) {
	ref := os.Getenv("HOSTLOCAL_REFERENCE_BIN")
	if ref == "" {
		t.Skip("set HOSTLOCAL_REFERENCE_BIN to a reference host-local binary")
	}
	ours := buildBinary(t)
	dir := t.TempDir()
	c := strings.Replace(conf(dir, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`), `"1.1.0"`, `"1.0.0"`, 1)
	steps := []struct{ bin, cmd, id, wantFiles string }{
		{ref, "ADD", "r1", ""},
		{ours, "ADD", "o1", ""},
		{ref, "ADD", "r2", "10.1.0.2 10.1.0.3 10.1.0.4 fd00::2 fd00::3 fd00::4 last_reserved_ip.0 last_reserved_ip.1 lock"},
		{ours, "DEL", "r1", ""},
		{ref, "CHECK", "o1", ""},
		{ref, "DEL", "o1", ""},
		// Our index still lists o1's addresses, which the reference released:
		// a second ADD of o1 is no "ADD without DEL".
		{ours, "ADD", "o1", ""},
		{ref, "DEL", "o1", ""},
		{ours, "DEL", "r2", "last_reserved_ip.0 last_reserved_ip.1 lock"},
	}
	for _, s := range steps {
		if _, err := run(s.bin, s.cmd, s.id, c); err != nil {
			t.Fatal(err)
		}
		if got := files(t, dir); s.wantFiles != "" && got != s.wantFiles {
			t.Fatalf("after %s %s by %s: %s, want %s", s.cmd, s.id, s.bin, got, s.wantFiles)
		}
	}
	if n := indexed(t, dir); n != 0 {
		t.Fatalf("%d attachments left in our index", n)
	}
}
