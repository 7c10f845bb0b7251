package reliability

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// diskFault is one way the IPAM data dir fails under a working reservation.
type diskFault struct {
	name  string
	apply func(t *testing.T, m *netnstest.MountNS, dataDir string) (undo func())
}

var diskFaults = []diskFault{
	{"read-only", func(t *testing.T, m *netnstest.MountNS, dataDir string) func() {
		m.Run(t, "mount", "--bind", dataDir, dataDir)
		m.Run(t, "mount", "-o", "remount,bind,ro", dataDir)
		return func() { m.Run(t, "mount", "-o", "remount,bind,rw", dataDir) }
	}},
	{"full", func(t *testing.T, m *netnstest.MountNS, dataDir string) func() {
		filler := m.Path(filepath.Join(dataDir, "filler"))
		fillUp(t, filler)
		return func() {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		}
	}},
}

// fillUp writes path until the file system is full.
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// TestIPAMDiskFaults: with the IPAM data dir read-only or full (a tiny
// tmpfs, in a private mount namespace), a bridge ADD fails with code 5 (I/O),
// leaves no veth, no reservation and no temporary file, keeps the records
// already there, and works again once the fault is gone.
func TestIPAMDiskFaults(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, fault := range diskFaults {
		t.Run(fault.name, func(t *testing.T) {
			node, pod, pod2 := netnstest.New(t, "cni-rel-node"), netnstest.New(t, "cni-rel-pod"), netnstest.New(t, "cni-rel-pod")
			m := netnstest.NewMountNS(t)
			dataDir := t.TempDir()
			m.Run(t, "mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "reltmpfs", dataDir)
			conf := mustJSON(t, map[string]any{"cniVersion": "1.1.0", "name": "reldisk", "type": "bridge", "bridge": "relbr0",
				"ipam": map[string]any{"type": "host-local", "dataDir": dataDir, "ranges": []any{[]any{map[string]any{"subnet": "10.93.0.0/24"}}}}})
			first := call{plugin: "bridge", cmd: "ADD", stdin: conf, node: node, netns: pod.Path, containerID: "disk-a", ifname: "eth0", umask: -1, wrap: m.Enter()}
			first.run(t).ok(t, "ADD before the fault")
			netDir := m.Path(filepath.Join(dataDir, "reldisk"))
			before := dirNames(t, netDir)

			undo := fault.apply(t, m, dataDir)
			second := first
			second.netns, second.containerID = pod2.Path, "disk-b"
			o := second.run(t)
			if code := o.code(t); code != 5 {
				t.Errorf("ADD with the data dir %s: code %d, want 5\n%s", fault.name, code, o.stdout)
			}
			if after := dirNames(t, netDir); after != before {
				t.Errorf("data dir changed by the failed ADD:\nbefore: %s\nafter:  %s", before, after)
			}
			if links := pod2.Links(t); len(links) != 1 {
				t.Errorf("links left in the pod: %v", links)
			}
			if veths := node.Links(t, "type", "veth"); len(veths) != 1 {
				t.Errorf("want only the first pod's veth on the node: %v", veths)
			}

			undo()
			second.run(t).ok(t, "ADD once the fault is gone")
			for _, c := range []call{first, second} {
				c.cmd = "DEL"
				c.run(t).ok(t, "DEL")
			}
			for _, entry := range strings.Fields(dirNames(t, netDir)) {
				if _, err := netip.ParseAddr(strings.Split(entry, ":")[0]); err == nil {
					t.Errorf("reservation %s left after DEL", entry)
				}
			}
		})
	}
}

// stampFile is host-local's index stamp: a mutating verb removes it first
// and writes it back last, so a verb that fails on a full disk leaves it
// missing and the next one rebuilds the index. It is a cache, not state.
const stampFile = ".cnisuite/index"

// dirNames lists the files under dir with their sizes (so a half-written
// file shows), and its directories, but the index stamp.
func dirNames(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == stampFile {
			return nil
		}
		if d.IsDir() {
			out = append(out, rel+"/")
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s:%d", rel, info.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}
