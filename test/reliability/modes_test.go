package reliability

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cnisuite/cni/pkg/subnet/envfile"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// checkTree fails on any entry under root whose mode is not the expected
// one, not owned by this process's user, or left over from a write.
func checkTree(t *testing.T, root string, dirMode, fileMode fs.FileMode) (files int) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fileMode
		if d.IsDir() {
			want = dirMode
		} else {
			files++
		}
		if info.Mode().Perm() != want || !(d.IsDir() || info.Mode().IsRegular()) {
			t.Errorf("%s: mode %v, want %v", path, info.Mode(), want)
		}
		if st := info.Sys().(*syscall.Stat_t); int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() {
			t.Errorf("%s: owned by %d:%d, want %d:%d", path, st.Uid, st.Gid, os.Geteuid(), os.Getegid())
		}
		if strings.Contains(d.Name(), ".tmp") || strings.HasPrefix(d.Name(), ".") && !d.IsDir() && d.Name() != ".lock" {
			t.Errorf("%s: a temporary file left behind", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestFileModes: whatever the umask (here 000, the worst), host-local's
// records and lock are 0600 in 0755 directories as the reference's, and
// flannel's saved delegate configurations are 0600 in a 0700 directory
// (they may carry credentials), as the reference plugin writes them.
func TestFileModes(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	node, pod := netnstest.New(t, "cni-rel-node"), netnstest.New(t, "cni-rel-pod")
	dir := t.TempDir()
	conf := mustJSON(t, flannelConf(t, dir, "relmodes"))
	c := call{plugin: "flannel", cmd: "ADD", stdin: conf, node: node, netns: pod.Path, containerID: "modes-ctr", ifname: "eth0", umask: 0}
	c.run(t).ok(t, "flannel ADD")
	if n := checkTree(t, filepath.Join(dir, "ipam"), 0o755, 0o600); n < 2 {
		t.Errorf("host-local wrote %d files, want at least a record and its lock", n)
	}
	if n := checkTree(t, filepath.Join(dir, "flannel"), 0o700, 0o600); n != 1 {
		t.Errorf("flannel saved %d files, want 1", n)
	}
	c.cmd = "DEL"
	c.run(t).ok(t, "flannel DEL")
	if n := checkTree(t, filepath.Join(dir, "flannel"), 0o700, 0o600); n != 0 {
		t.Errorf("flannel left %d saved configurations after DEL", n)
	}
}

// TestSubnetEnvMode: subnet.env is 0644 in a 0755 directory whatever the
// umask, as flanneld's WriteSubnetFile leaves it (the plugin reads it as
// any user that runs it).
func TestSubnetEnvMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "flannel")
	umaskMu.Lock()
	old := syscall.Umask(0)
	err := envfile.Write(filepath.Join(dir, "subnet.env"), sampleEnv(0))
	syscall.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if n := checkTree(t, dir, 0o755, 0o644); n != 1 {
		t.Errorf("%d files in %s, want only subnet.env", n, dir)
	}
}

// TestSweepLockMode: portmap's node-wide lock file (/run/cni/portmap.lock),
// made under umask 000 in a private mount namespace whose /run is a fresh
// tmpfs, is 0600 in a 0755 directory.
func TestSweepLockMode(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	node, pod := netnstest.New(t, "cni-rel-node"), netnstest.New(t, "cni-rel-pod")
	m := netnstest.NewMountNS(t)
	keep := t.TempDir() // the namespaces under /run/netns, carried over the new /run
	m.Run(t, "mount", "--rbind", "/run/netns", keep)
	m.Run(t, "mount", "-t", "tmpfs", "-o", "mode=0755", "relrun", "/run")
	m.Run(t, "mkdir", "/run/netns")
	m.Run(t, "mount", "--rbind", keep, "/run/netns")
	conf := mustJSON(t, map[string]any{"cniVersion": "1.1.0", "name": "rellock", "type": "portmap",
		"runtimeConfig": map[string]any{"portMappings": []any{map[string]any{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}}},
		"prevResult":    map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.91.0.5/24"}}}})
	c := call{plugin: "portmap", cmd: "ADD", stdin: conf, node: node, netns: pod.Path, containerID: "lock-ctr", ifname: "eth0", umask: 0, wrap: m.Enter()}
	c.run(t).ok(t, "portmap ADD")
	c.cmd = "DEL"
	c.run(t).ok(t, "portmap DEL")
	if n := checkTree(t, m.Path("/run/cni"), 0o755, 0o600); n != 1 {
		t.Errorf("%d files in /run/cni, want the lock only", n)
	}
}
