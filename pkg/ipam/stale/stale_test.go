package stale

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/ipam/disk"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// fakeProc is a procfs with the given mountinfo and no process.
func fakeProc(t *testing.T, mountinfo string) string {
	t.Helper()
	proc := t.TempDir()
	os.MkdirAll(filepath.Join(proc, "self"), 0o755)
	if err := os.WriteFile(filepath.Join(proc, "self", "mountinfo"), []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	return proc
}

// identity stands a plain file in for a namespace: Judge compares device
// and inode, whatever the file system.
func identity(t *testing.T, path string) ipam.Netns {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return ipam.Netns{Path: path, Dev: st.Dev, Ino: st.Ino}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestJudge(t *testing.T) {
	dir := t.TempDir()
	alive := filepath.Join(dir, "alive")
	touch(t, alive)
	deleted := filepath.Join(dir, "deleted")
	touch(t, deleted)
	deletedID := identity(t, deleted)
	os.Remove(deleted)
	reused := filepath.Join(dir, "reused")
	touch(t, reused)
	reusedID := identity(t, reused)
	os.Rename(reused, filepath.Join(dir, "kept")) // keeps the inode from being reused
	touch(t, reused)                              // recreated: another inode at the same path
	held := filepath.Join(dir, "held")
	touch(t, held)
	heldID := identity(t, held)
	os.Remove(held)
	mountinfo := fmt.Sprintf("36 25 %d:%d net:[%d] /run/netns/other rw shared:5 - nsfs nsfs rw\n",
		unix.Major(heldID.Dev), unix.Minor(heldID.Dev), heldID.Ino)
	p := &Prober{Proc: fakeProc(t, mountinfo)}

	tests := []struct {
		name   string
		r      ipam.Reservation
		state  State
		reason string
	}{
		{"namespace in place", ipam.Reservation{Netns: identity(t, alive)}, Alive, "is at"},
		{"path gone", ipam.Reservation{Netns: deletedID}, Gone, "is gone"},
		{"path reused", ipam.Reservation{Netns: reusedID}, Gone, "no longer holds"},
		{"path gone, namespace mounted elsewhere", ipam.Reservation{Netns: heldID}, Unknown, "the mount at /run/netns/other"},
		{"no namespace recorded", ipam.Reservation{}, Unknown, "no namespace recorded"},
		{"not a namespace at ADD", ipam.Reservation{Netns: ipam.Netns{Path: deleted}}, Unknown, "was not a network namespace"},
		{"uninspectable path", ipam.Reservation{Netns: ipam.Netns{Path: alive + "/x", Dev: 1, Ino: 2}}, Unknown, "cannot look at"},
		{"empty record", ipam.Reservation{Corrupt: fmt.Errorf("%w: %w", disk.ErrCorrupt, ipam.ErrEmptyRecord)}, Gone, "empty record"},
		{"garbage record", ipam.Reservation{Corrupt: disk.ErrCorrupt}, Corrupt, "corrupt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := p.Judge(tt.r)
			if v.State != tt.state || !strings.Contains(v.Reason, tt.reason) {
				t.Fatalf("Judge = %s (%s), want %s (%q)", v.State, v.Reason, tt.state, tt.reason)
			}
		})
	}
}

// TestJudgeHeldByTaskOrFile: a namespace a task lives in, or a process holds
// open, is not gone although its path is; an unreadable /proc proves nothing.
func TestJudgeHeldByTaskOrFile(t *testing.T) {
	dir := t.TempDir()
	ns := filepath.Join(dir, "ns")
	touch(t, ns)
	id := identity(t, ns)
	for _, tt := range []struct {
		name, link, want string
	}{
		{"task", "42/task/43/ns/net", "task 43 of process 42"},
		{"file", "42/fd/7", "file descriptor 7 of process 42"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			proc := fakeProc(t, "")
			os.MkdirAll(filepath.Join(proc, "42", "task"), 0o755)
			os.MkdirAll(filepath.Join(proc, "42", "fd"), 0o755)
			link := filepath.Join(proc, tt.link)
			os.MkdirAll(filepath.Dir(link), 0o755)
			// A fake fd reads as net:[ino], as the kernel's do.
			target := ns
			if tt.name == "file" {
				target = fmt.Sprintf("net:[%d]", id.Ino)
				if err := os.Link(ns, filepath.Join(filepath.Dir(link), target)); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			moved := id
			moved.Path = filepath.Join(dir, "gone")
			v := (&Prober{Proc: proc}).Judge(ipam.Reservation{Netns: moved})
			if v.State != Unknown || !strings.Contains(v.Reason, tt.want) {
				t.Fatalf("Judge = %s (%s), want unknown held by %q", v.State, v.Reason, tt.want)
			}
		})
	}
	v := (&Prober{Proc: filepath.Join(dir, "no-proc")}).Judge(ipam.Reservation{Netns: ipam.Netns{Path: filepath.Join(dir, "gone"), Dev: 1, Ino: 2}})
	if v.State != Unknown || !strings.Contains(v.Reason, "unknown") {
		t.Fatalf("Judge without /proc = %s (%s), want unknown", v.State, v.Reason)
	}
}

func TestParseNsfsMount(t *testing.T) {
	tests := []struct {
		line  string
		id    nsID
		where string
		ok    bool
	}{
		{"36 25 0:4 net:[4026532281] /run/netns/x rw shared:5 - nsfs nsfs rw", nsID{unix.Mkdev(0, 4), 4026532281}, "/run/netns/x", true},
		{"36 25 0:4 net:[4026532281] /run/netns/x rw - nsfs nsfs rw", nsID{unix.Mkdev(0, 4), 4026532281}, "/run/netns/x", true},
		{"37 25 0:4 mnt:[4026531840] /run/x rw - nsfs nsfs rw", nsID{}, "", false},
		{"38 25 0:22 / /run rw - tmpfs tmpfs rw", nsID{}, "", false},
		{"39 25 0:4 net:[x] /run/netns/y rw - nsfs nsfs rw", nsID{}, "", false},
		{`40 25 0:4 net:[7] /run/my\040netns/a\134b rw - nsfs nsfs rw`, nsID{unix.Mkdev(0, 4), 7}, `/run/my netns/a\b`, true},
		{`41 25 0:4 net:[7] /x\04 rw - nsfs nsfs rw`, nsID{unix.Mkdev(0, 4), 7}, `/x\04`, true},
		{"garbage", nsID{}, "", false},
	}
	for _, tt := range tests {
		id, where, ok := parseNsfsMount(tt.line)
		if id != tt.id || where != tt.where || ok != tt.ok {
			t.Errorf("parseNsfsMount(%q) = %v %q %v", tt.line, id, where, ok)
		}
	}
}

func FuzzParseNsfsMount(f *testing.F) {
	f.Add("36 25 0:4 net:[4026532281] /run/netns/x rw shared:5 - nsfs nsfs rw")
	f.Fuzz(func(t *testing.T, line string) {
		id, where, ok := parseNsfsMount(line)
		if ok && (where == "" || !strings.Contains(line, fmt.Sprint(id.ino))) {
			t.Fatalf("parseNsfsMount(%q) = %v %q", line, id, where)
		}
	})
}

// TestSurveyAndReclaim: only the reservations judged gone are released.
func TestSurveyAndReclaim(t *testing.T) {
	dir := t.TempDir()
	alive, gone := filepath.Join(dir, "alive"), filepath.Join(dir, "gone")
	touch(t, alive)
	touch(t, gone)
	claims := map[string]ipam.Claim{
		"10.0.0.2": {Owner: ipam.Owner{ContainerID: "a", IfName: "eth0"}, Netns: identity(t, alive)},
		"10.0.0.3": {Owner: ipam.Owner{ContainerID: "b", IfName: "eth0"}, Netns: identity(t, gone)},
		"10.0.0.4": {Owner: ipam.Owner{ContainerID: "c", IfName: "eth0"}},
	}
	s, err := disk.Open(dir, "net")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for a, c := range claims {
		if ok, err := s.Reserve(netip.MustParseAddr(a), c, 0); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	os.WriteFile(filepath.Join(s.Dir(), "10.0.0.5"), nil, 0o600)
	os.Remove(gone)
	vs, err := Survey(s, &Prober{Proc: fakeProc(t, "")})
	if err != nil || len(vs) != 4 {
		t.Fatalf("Survey = %+v, %v", vs, err)
	}
	done, err := Reclaim(s, vs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range done {
		got = append(got, v.Addr.String())
	}
	if strings.Join(got, " ") != "10.0.0.3 10.0.0.5" {
		t.Fatalf("reclaimed %v, want 10.0.0.3 and the empty 10.0.0.5", got)
	}
	if left, _ := s.All(); len(left) != 2 {
		t.Fatalf("left %+v", left)
	}
}

// TestRealNamespaces: a namespace identified at ADD is alive while mounted,
// unknown while a process still lives in it after its path went, and gone
// once nothing holds it.
func TestRealNamespaces(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "cni-stale")
	id := Identify(ns.Path)
	if id.Ino == 0 || id.Path != ns.Path {
		t.Fatalf("Identify(%s) = %+v", ns.Path, id)
	}
	if plain := Identify(t.TempDir()); plain.Ino != 0 {
		t.Fatalf("a directory was identified as a namespace: %+v", plain)
	}
	judge := func() Verdict { return (&Prober{}).Judge(ipam.Reservation{Netns: id}) }
	if v := judge(); v.State != Alive {
		t.Fatalf("mounted namespace: %s (%s)", v.State, v.Reason)
	}
	sleeper := exec.Command("ip", "netns", "exec", ns.Name, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	waitFor(t, func() bool { return Identify(fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid)).Ino == id.Ino })
	if out, err := exec.Command("ip", "netns", "delete", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if v := judge(); v.State != Unknown || !strings.Contains(v.Reason, "task") {
		t.Fatalf("namespace of a live process: %s (%s)", v.State, v.Reason)
	}
	sleeper.Process.Kill()
	sleeper.Wait()
	if v := judge(); v.State != Gone {
		t.Fatalf("namespace nothing holds: %s (%s)", v.State, v.Reason)
	}
}

// TestInodeReuse: the kernel gives a new namespace the inode number of one
// just deleted. With namespace IDs (Linux 6.18+), the dead one is still
// proved gone, whether the new one is mounted elsewhere or at the old path.
func TestInodeReuse(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	old := netnstest.New(t, "cni-stale")
	dead := Identify(old.Path)
	if dead.ID == 0 {
		t.Skip("the kernel has no NS_GET_ID (Linux 6.18+): inode reuse keeps such reservations unknown")
	}
	ipDel := func(name string) {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	ipDel(old.Name)
	reusedBy := func(name string) bool {
		for range 20 {
			if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
			if Identify("/run/netns/"+name).Ino == dead.Ino {
				return true
			}
			ipDel(name)
			unix.Nanosleep(&unix.Timespec{Nsec: 50e6}, nil) // the kernel frees namespaces asynchronously
		}
		return false
	}
	for _, name := range []string{old.Name + "-new", old.Name} {
		if !reusedBy(name) {
			t.Skipf("the kernel did not reuse inode %d", dead.Ino)
		}
		v := (&Prober{}).Judge(ipam.Reservation{Netns: dead})
		if v.State != Gone {
			t.Fatalf("with %s reusing its inode: %s (%s)", name, v.State, v.Reason)
		}
		ipDel(name)
	}
}

// waitFor polls until cond holds (a started process takes a moment to enter
// its namespace).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
	}
	t.Fatal("condition never met")
}
