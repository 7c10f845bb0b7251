package reliability

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// legacyIptables makes a directory whose iptables tools are the legacy
// ones: the machine's iptables-nft never takes the xtables lock, the legacy
// tools (and so nodes that run them) do. It returns the PATH to give plugins.
func legacyIptables(t *testing.T) string {
	t.Helper()
	multi, err := filepath.EvalSymlinks("/usr/sbin/iptables-legacy-restore")
	if err != nil {
		t.Skip("needs iptables-legacy (Debian's iptables)")
	}
	dir := t.TempDir()
	for _, name := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		if err := os.Symlink(multi, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir + ":" + os.Getenv("PATH")
}

// holdLock takes the xtables lock at path (a private lock file named by
// XTABLES_LOCKFILE, never the machine's /run/xtables.lock) until the test ends.
func holdLock(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

// TestXtablesLockHeld: with the xtables lock held by another process, a
// bridge ADD with ipMasq and a portmap ADD wait a bounded time, fail with
// code 11 (try again later) and leave no link, reservation or rule.
func TestXtablesLockHeld(t *testing.T) {
	t.Parallel() // waits on a lock of its own, in namespaces of its own
	netnstest.SkipUnlessRoot(t)
	path := legacyIptables(t)
	node, pod := netnstest.New(t, "cni-rel-node"), netnstest.New(t, "cni-rel-pod")
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	holdLock(t, lock)
	env := []string{"PATH=" + path, "XTABLES_LOCKFILE=" + lock}
	dataDir := t.TempDir()
	bridge := call{plugin: "bridge", cmd: "ADD", node: node, netns: pod.Path, containerID: "xt-ctr", ifname: "eth0", umask: -1, env: env,
		stdin: mustJSON(t, map[string]any{"cniVersion": "1.1.0", "name": "relxt", "type": "bridge", "bridge": "relbr0", "ipMasq": true,
			"ipam": map[string]any{"type": "host-local", "dataDir": dataDir, "ranges": []any{[]any{map[string]any{"subnet": "10.94.0.0/24"}}}}})}
	portmap := call{plugin: "portmap", cmd: "ADD", node: node, netns: pod.Path, containerID: "xt-ctr", ifname: "eth0", umask: -1, env: env,
		stdin: mustJSON(t, map[string]any{"cniVersion": "1.1.0", "name": "relxt", "type": "portmap",
			"runtimeConfig": map[string]any{"portMappings": []any{map[string]any{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}}},
			"prevResult":    map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.94.0.5/24"}}}})}
	for _, c := range []call{bridge, portmap} {
		start := time.Now()
		o := c.run(t)
		took := time.Since(start)
		if code := o.code(t); code != 11 {
			t.Errorf("%s ADD with the xtables lock held: code %d, want 11\n%s\n%s", c.plugin, code, o.stdout, o.stderr)
		}
		if took > 30*time.Second {
			t.Errorf("%s ADD waited %v for the lock, want a bounded wait", c.plugin, took)
		}
		t.Logf("%s ADD failed after %v: %s", c.plugin, took.Round(time.Millisecond), strings.TrimSpace(o.stdout))
	}
	nothingLeft(t, node, pod, dataDir, path)
}

// nothingLeft fails on a veth in the node, a link but lo in the pod, a
// reservation (a file named by its address) under dataDir or a CNI chain in
// the node's tables, read with the iptables of path ("": the test's PATH).
func nothingLeft(t *testing.T, node, pod *netnstest.NS, dataDir, path string) {
	t.Helper()
	if veths := node.Links(t, "type", "veth"); len(veths) > 0 {
		t.Errorf("veth left on the node: %v", veths)
	}
	if links := pod.Links(t); len(links) != 1 {
		t.Errorf("links left in the pod: %v", links)
	}
	filepath.WalkDir(dataDir, func(p string, d os.DirEntry, err error) error {
		if _, perr := netip.ParseAddr(d.Name()); err == nil && perr == nil {
			t.Errorf("reservation left in the IPAM data dir: %s", p)
		}
		return nil
	})
	if path == "" {
		path = os.Getenv("PATH")
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := node.Try("env", "PATH="+path, save)
		if err != nil {
			t.Errorf("%s in the node: %v", save, err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "CNI") {
				t.Errorf("%s in the node: %s", save, line)
			}
		}
	}
}
