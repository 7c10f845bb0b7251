package reliability

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cnisuite/cni/pkg/subnet/envfile"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// sampleEnv returns two different subnet.env contents of different lengths,
// so that a torn write cannot pass for either.
func sampleEnv(i int) envfile.Env {
	e := envfile.Env{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.1/24"),
		MTU: 1450, IPMasq: true,
	}
	if i%2 == 1 {
		e.Subnet = netip.MustParsePrefix("10.244.17.1/24")
		e.IPv6Network = netip.MustParsePrefix("fd00:244::/56")
		e.IPv6Subnet = netip.MustParsePrefix("fd00:244:0:11::1/64")
		e.MTU = 1400
	}
	return e
}

// reader reads with read until stop is closed and counts what it saw; a
// read that is neither absent nor whole is reported through bad.
func reader(stop <-chan struct{}, read func() (bool, error)) (reads *atomic.Int64, wait func() error) {
	reads = new(atomic.Int64)
	var wg sync.WaitGroup
	var bad error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			seen, err := read()
			if err != nil {
				bad = err
				return
			}
			if seen {
				reads.Add(1)
			}
		}
	}()
	return reads, func() error { wg.Wait(); return bad }
}

// TestSubnetEnvAtomic: a plugin reading subnet.env while the daemon
// rewrites it sees one whole version or the other, never a mix.
func TestSubnetEnvAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	want := map[string]bool{string(sampleEnv(0).Marshal()): true, string(sampleEnv(1).Marshal()): true}
	if err := envfile.Write(path, sampleEnv(0)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	reads, wait := reader(stop, func() (bool, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return false, fmt.Errorf("subnet.env unreadable during a rewrite: %w", err)
		}
		if !want[string(b)] {
			return false, fmt.Errorf("torn subnet.env read:\n%s", b)
		}
		return true, nil
	})
	for i := range 2000 {
		if err := envfile.Write(path, sampleEnv(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if reads.Load() < 100 {
		t.Fatalf("only %d reads overlapped the writes", reads.Load())
	}
}

// recordRE is a whole host-local record of this test: container ID, CRLF, ifname.
var recordRE = regexp.MustCompile(`^atomic-[0-9]+\r\neth0$`)

// TestRecordsAtomic: host-local's reservation files, read while ADDs and
// DELs write and remove them, are absent or whole, never partial.
func TestRecordsAtomic(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	node, pod := netnstest.New(t, "cni-rel-node"), netnstest.New(t, "cni-rel-pod")
	dataDir := t.TempDir()
	netDir := filepath.Join(dataDir, "relatomic")
	conf := mustJSON(t, map[string]any{"cniVersion": "1.1.0", "name": "relatomic", "type": "host-local",
		"ipam": map[string]any{"type": "host-local", "dataDir": dataDir,
			"ranges": []any{[]any{map[string]any{"subnet": "10.97.0.0/24"}}}}})
	stop := make(chan struct{})
	reads, wait := reader(stop, func() (bool, error) { return readRecords(netDir) })
	n := 40
	for i := range n {
		c := call{plugin: "host-local", cmd: "ADD", stdin: conf, node: node, netns: pod.Path,
			containerID: fmt.Sprintf("atomic-%d", i), ifname: "eth0", umask: -1}
		c.run(t).ok(t, "host-local ADD")
		if i%2 == 1 {
			c.cmd = "DEL"
			c.run(t).ok(t, "host-local DEL")
		}
	}
	close(stop)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if reads.Load() == 0 {
		t.Fatal("no record read while host-local ran")
	}
	if _, err := readRecords(netDir); err != nil {
		t.Fatal(err)
	}
}

// readRecords reads every reservation file (named by its address) in dir.
func readRecords(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	seen := false
	for _, e := range entries {
		if _, perr := netip.ParseAddr(e.Name()); perr != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
		}
		if !recordRE.Match(b) {
			return false, fmt.Errorf("partial record %s: %q", e.Name(), b)
		}
		seen = true
	}
	return seen, nil
}
