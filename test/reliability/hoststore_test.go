package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/cnictl"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// hostStore is one host-local network in a temp data dir, and a directory
// outside it whose files must survive whatever host-local is shown.
type hostStore struct {
	t             *testing.T
	node          *netnstest.NS
	data, victim  string
	netDir        string
	victimContent map[string]string
}

const hsNet = "relhs"

func newHostStore(t *testing.T) *hostStore {
	t.Helper()
	h := &hostStore{t: t, node: netnstest.New(t, "cni-rel-node"), data: t.TempDir(), victim: t.TempDir()}
	h.netDir = filepath.Join(h.data, hsNet)
	// Names host-local would take for its own: an owner key, a temporary
	// file, a record; and a subdirectory.
	h.victimContent = map[string]string{"0123456789abcdef0123456789abcdef": "{}", ".tmp-1": "tmp", "10.81.0.2": "victim\r\neth0", "sub/precious": "keep"}
	for name, content := range h.victimContent {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(h.victim, name)), 0o755))
		writeFile(t, filepath.Join(h.victim, name), content)
	}
	return h
}

// call runs host-local (or another plugin) for container id; env adds CNI_ARGS and the like.
func (h *hostStore) call(plugin, cmd, id string, env ...string) outcome {
	h.t.Helper()
	ipamConf := map[string]any{"type": "host-local", "dataDir": h.data,
		"ranges": []any{[]any{map[string]any{"subnet": "10.81.0.0/24", "rangeStart": "10.81.0.2", "rangeEnd": "10.81.0.6"}}}}
	conf := map[string]any{"cniVersion": "1.1.0", "name": hsNet, "type": plugin, "ipam": ipamConf}
	if plugin == "bridge" {
		conf["bridge"] = "relhsbr0"
	}
	if cmd == "GC" {
		conf["cni.dev/valid-attachments"] = []any{}
	}
	netns := "/run/netns/none"
	if plugin == "bridge" {
		netns = netnstest.New(h.t, "cni-rel-pod").Path
	}
	c := call{plugin: plugin, cmd: cmd, stdin: mustJSON(h.t, conf), node: h.node, netns: netns, containerID: id, ifname: "eth0", umask: -1, env: env}
	return c.run(h.t)
}

// expect checks a call's CNI code and that its message says what it must.
func (h *hostStore) expect(o outcome, what string, code uint, says ...string) {
	h.t.Helper()
	if got := o.code(h.t); got != code {
		h.t.Fatalf("%s: code %d, want %d\nstdout: %s\nstderr: %s", what, got, code, o.stdout, o.stderr)
	}
	for _, s := range says {
		if !strings.Contains(o.stdout, s) {
			h.t.Errorf("%s: the error does not say %q:\n%s", what, s, o.stdout)
		}
	}
}

// victimIntact fails unless the victim directory holds exactly what it did.
func (h *hostStore) victimIntact() {
	h.t.Helper()
	for name, content := range h.victimContent {
		if got, err := os.ReadFile(filepath.Join(h.victim, name)); err != nil || string(got) != content {
			h.t.Errorf("victim file %s: %q, %v; want %q untouched", name, got, err, content)
		}
	}
	if got, want := dirNames(h.t, h.victim), ".tmp-1:3 0123456789abcdef0123456789abcdef:2 10.81.0.2:12 sub/ sub/precious:4"; got != want {
		h.t.Errorf("victim directory holds %s, want %s", got, want)
	}
}

// plant replaces the index with a symbolic link at at (.cnisuite or
// .cnisuite/owners) to the victim directory.
func (h *hostStore) plant(at string) {
	h.t.Helper()
	link := filepath.Join(h.netDir, at)
	must(h.t, os.RemoveAll(filepath.Join(h.netDir, ".cnisuite")))
	must(h.t, os.MkdirAll(filepath.Dir(link), 0o755))
	must(h.t, os.Symlink(h.victim, link))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// cnictl runs `cnictl ipam ARGS --data-dir D` in process.
func (h *hostStore) cnictl(args ...string) (int, string) {
	h.t.Helper()
	var out, errb bytes.Buffer
	code := cnictl.Main(append(append([]string{"ipam"}, args...), "--data-dir", h.data), &out, &errb)
	return code, out.String() + errb.String()
}

// TestHostLocalIndexSymlinked: a symbolic link at .cnisuite/owners or at
// .cnisuite pointing out of the data dir is never followed: bridge ADD and
// DEL, host-local GC and `cnictl ipam gc` (each rebuilding the index) leave
// its target as it was and keep working.
func TestHostLocalIndexSymlinked(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, at := range []string{".cnisuite/owners", ".cnisuite"} {
		t.Run(at, func(t *testing.T) {
			h := newHostStore(t)
			h.expect(h.call("bridge", "ADD", "hs-a"), "first ADD", 0)
			h.plant(at)
			h.expect(h.call("bridge", "ADD", "hs-b"), "ADD with the index symlinked", 0)
			h.victimIntact()
			h.plant(at)
			h.expect(h.call("bridge", "DEL", "hs-a"), "DEL with the index symlinked", 0)
			h.victimIntact()
			h.plant(at)
			if code, out := h.cnictl("gc", hsNet); code != 0 {
				t.Fatalf("cnictl ipam gc: exit %d\n%s", code, out)
			}
			h.victimIntact()
			h.plant(at)
			h.expect(h.call("host-local", "GC", ""), "GC", 0)
			h.victimIntact()
			if _, err := os.Stat(filepath.Join(h.netDir, "10.81.0.3")); !os.IsNotExist(err) {
				t.Errorf("GC with an empty valid list kept hs-b's record: %v", err)
			}
		})
	}
}

// TestHostLocalStrayIndexFile: a regular file at .cnisuite or at
// .cnisuite/owners does not block the network: ADD and DEL work, and the
// file is kept under another name.
func TestHostLocalStrayIndexFile(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, at := range []string{".cnisuite", ".cnisuite/owners"} {
		t.Run(at, func(t *testing.T) {
			h := newHostStore(t)
			h.expect(h.call("host-local", "ADD", "hs-a"), "first ADD", 0)
			must(t, os.RemoveAll(filepath.Join(h.netDir, at)))
			writeFile(t, filepath.Join(h.netDir, at), "stray")
			h.expect(h.call("host-local", "ADD", "hs-b"), "ADD with a stray "+at, 0)
			h.expect(h.call("host-local", "DEL", "hs-a"), "DEL with a stray "+at, 0)
			h.expect(h.call("host-local", "DEL", "hs-b"), "DEL", 0)
			if got := dirNames(t, h.netDir); strings.Contains(got, "10.81.") {
				t.Errorf("records left after DEL: %s", got)
			}
			strays, _ := filepath.Glob(filepath.Join(h.netDir, at+".stray-*"))
			if len(strays) != 1 {
				t.Fatalf("stray files kept: %v", strays)
			}
			if got, _ := os.ReadFile(strays[0]); string(got) != "stray" {
				t.Errorf("the stray file now holds %q", got)
			}
		})
	}
}

// TestHostLocalWrongTypeState: a directory at the lock's name stops ADD and
// DEL with code 5 and a message naming it; a directory at a round-robin
// note's name is only a lost hint.
func TestHostLocalWrongTypeState(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	t.Run("lock", func(t *testing.T) {
		h := newHostStore(t)
		h.expect(h.call("host-local", "ADD", "hs-a"), "first ADD", 0)
		lock := filepath.Join(h.netDir, "lock")
		must(t, os.Remove(lock))
		must(t, os.Mkdir(lock, 0o755))
		for _, cmd := range []string{"ADD", "DEL"} {
			h.expect(h.call("host-local", cmd, "hs-a"), cmd+" with the lock a directory", 5, lock+" is a directory", "remove it by hand")
		}
		must(t, os.Remove(lock))
		h.expect(h.call("host-local", "DEL", "hs-a"), "DEL once the lock is fixed", 0)
	})
	t.Run("last_reserved_ip", func(t *testing.T) {
		h := newHostStore(t)
		h.expect(h.call("host-local", "ADD", "hs-a"), "first ADD", 0)
		note := filepath.Join(h.netDir, "last_reserved_ip.0")
		must(t, os.Remove(note))
		must(t, os.Mkdir(note, 0o755))
		o := h.call("host-local", "ADD", "hs-b")
		h.expect(o, "ADD with last_reserved_ip.0 a directory", 0)
		if !strings.Contains(o.stderr, "ignoring host-local's round-robin note") {
			t.Errorf("no warning about the note:\n%s", o.stderr)
		}
		h.expect(h.call("host-local", "DEL", "hs-b"), "DEL", 0)
	})
}

// TestHostLocalAddressBlockers: a directory, a FIFO and a symbolic link
// named like addresses keep those addresses from being handed out; nothing
// opens the FIFO or follows the link (a requested address there is refused
// at once), GC leaves them, and `cnictl ipam ls` shows each as blocked.
func TestHostLocalAddressBlockers(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	h := newHostStore(t)
	must(t, os.MkdirAll(filepath.Join(h.netDir, "10.81.0.2"), 0o755))
	must(t, syscall.Mkfifo(filepath.Join(h.netDir, "10.81.0.3"), 0o600))
	must(t, os.Symlink(filepath.Join(h.victim, "10.81.0.2"), filepath.Join(h.netDir, "10.81.0.4")))
	o := h.call("host-local", "ADD", "hs-a")
	h.expect(o, "ADD beside the blockers", 0, "10.81.0.5/24")
	for _, ip := range []string{"10.81.0.3", "10.81.0.4"} {
		o := h.call("host-local", "ADD", "hs-"+ip, "CNI_ARGS=IP="+ip)
		h.expect(o, "ADD requesting "+ip, 7, "is blocked", "remove it by hand")
		if strings.Contains(o.stdout, "container victim") { // what the link's target reads as
			t.Errorf("ADD requesting %s followed the link: %s", ip, o.stdout)
		}
	}
	h.victimIntact()

	code, out := h.cnictl("ls", "--json", hsNet)
	var rows []struct{ Address, State, Reason string }
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil {
		t.Fatalf("cnictl ipam ls: exit %d, %v\n%s", code, err, out)
	}
	want := map[string]string{"10.81.0.2": "a directory", "10.81.0.3": "a named pipe (FIFO)", "10.81.0.4": "a symbolic link"}
	for _, r := range rows {
		if kind, ok := want[r.Address]; ok {
			if r.State != "blocked" || !strings.HasPrefix(r.Reason, kind) || !strings.Contains(r.Reason, "remove it by hand") {
				t.Errorf("ls row %+v, want blocked by %s", r, kind)
			}
			delete(want, r.Address)
		}
	}
	if len(want) > 0 {
		t.Errorf("ls does not show %v:\n%s", want, out)
	}
	h.expect(h.call("host-local", "GC", ""), "GC", 0)
	for _, ip := range []string{"10.81.0.2", "10.81.0.3", "10.81.0.4"} {
		if _, err := os.Lstat(filepath.Join(h.netDir, ip)); err != nil {
			t.Errorf("GC removed the blocker at %s: %v", ip, err)
		}
	}
	h.victimIntact()
}

// TestHostLocalLockHolderStopped: a host-local lock held by a stopped
// process makes ADD fail with code 11 within a bound, naming the lock file
// and its holder; once the holder is gone ADD works.
func TestHostLocalLockHolderStopped(t *testing.T) {
	t.Parallel() // waits on a lock of its own, in a data dir of its own
	netnstest.SkipUnlessRoot(t)
	h := newHostStore(t)
	h.expect(h.call("host-local", "ADD", "hs-a"), "first ADD", 0)
	lock := filepath.Join(h.netDir, "lock")
	// One process holding the lock: flock takes it, then becomes sleep.
	holder := exec.Command("flock", "--no-fork", lock, "sleep", "600")
	if err := holder.Start(); err != nil {
		t.Skipf("needs flock (util-linux): %v", err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	waitLocked(t, lock)
	// flock holds the lock before it becomes sleep: stopped in between, it
	// would be named flock.
	waitFor(t, "the lock holder to become sleep", func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", holder.Process.Pid))
		return string(comm) == "sleep\n"
	})
	must(t, holder.Process.Signal(syscall.SIGSTOP))

	start := time.Now()
	o := h.call("host-local", "ADD", "hs-b")
	took := time.Since(start)
	h.expect(o, "ADD with the lock held by a stopped process", 11, lock, fmt.Sprintf("process %d (sleep, stopped)", holder.Process.Pid), "end it")
	if took > 30*time.Second {
		t.Errorf("ADD waited %v for the lock, want a bounded wait", took)
	}
	t.Logf("ADD failed after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(o.stdout))
	must(t, holder.Process.Kill())
	_ = holder.Wait()
	h.expect(h.call("host-local", "ADD", "hs-b"), "ADD once the holder is gone", 0)
}

// waitLocked waits until something holds the flock on path.
func waitLocked(t *testing.T, path string) {
	t.Helper()
	waitFor(t, "something to take the lock "+path, func() bool {
		f, err := os.Open(path)
		if err == nil {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			f.Close()
		}
		return err == syscall.EWOULDBLOCK
	})
}

// waitFor polls done until it holds, for at most 10 s.
func waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !done(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
	}
}
