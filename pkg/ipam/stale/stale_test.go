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
	p := &Prober{}

	tests := []struct {
		name   string
		r      ipam.Reservation
		state  State
		reason string
	}{
		{"namespace in place", ipam.Reservation{Netns: identity(t, alive)}, Alive, "is at"},
		{"path gone, no nsid", ipam.Reservation{Netns: deletedID}, Unknown, "is gone, but no nsid was recorded"},
		{"path reused, no nsid", ipam.Reservation{Netns: reusedID}, Unknown, "no longer holds"},
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

func TestParseNsfsMount(t *testing.T) {
	tests := []struct {
		line, where string
		ok          bool
	}{
		{"36 25 0:4 net:[4026532281] /run/netns/x rw shared:5 - nsfs nsfs rw", "/run/netns/x", true},
		{"36 25 0:4 net:[4026532281] /run/netns/x rw - nsfs nsfs rw", "/run/netns/x", true},
		{"37 25 0:4 mnt:[4026531840] /run/x rw - nsfs nsfs rw", "", false},
		{"38 25 0:22 / /run rw - tmpfs tmpfs rw", "", false},
		{`40 25 0:4 net:[7] /run/my\040netns/a\134b rw - nsfs nsfs rw`, `/run/my netns/a\b`, true},
		{`41 25 0:4 net:[7] /x\04 rw - nsfs nsfs rw`, `/x\04`, true},
		{"garbage", "", false},
	}
	for _, tt := range tests {
		where, ok := parseNsfsMount(tt.line)
		if where != tt.where || ok != tt.ok {
			t.Errorf("parseNsfsMount(%q) = %q %v", tt.line, where, ok)
		}
	}
}

func FuzzParseNsfsMount(f *testing.F) {
	f.Add("36 25 0:4 net:[4026532281] /run/netns/x rw shared:5 - nsfs nsfs rw")
	f.Fuzz(func(t *testing.T, line string) {
		if where, ok := parseNsfsMount(line); ok && (where == "" || !strings.Contains(line, "net:[")) {
			t.Fatalf("parseNsfsMount(%q) = %q", line, where)
		}
	})
}

// inNode runs fn in node's namespace, where a plugin runs: the nsids are
// the node's.
func inNode[T any](t *testing.T, node *netnstest.NS, fn func() T) T {
	t.Helper()
	var v T
	node.Do(t, func() error { v = fn(); return nil })
	return v
}

// judgeSoon judges id in node until it is want: the kernel frees a
// namespace asynchronously once nothing holds it.
func judgeSoon(t *testing.T, node *netnstest.NS, id ipam.Netns, want State) Verdict {
	t.Helper()
	var v Verdict
	for range 100 {
		v = inNode(t, node, func() Verdict { return (&Prober{}).Judge(ipam.Reservation{Netns: id}) })
		if v.State == want {
			break
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 20e6}, nil)
	}
	return v
}

// TestSurveyAndReclaim: only the reservations judged gone are released.
func TestSurveyAndReclaim(t *testing.T) {
	node := netnstest.New(t, "cni-stale-node")
	alive, gone := netnstest.New(t, "cni-stale"), netnstest.New(t, "cni-stale")
	claims := map[string]ipam.Claim{
		"10.0.0.2": {Owner: ipam.Owner{ContainerID: "a", IfName: "eth0"}, Netns: inNode(t, node, func() ipam.Netns { return Identify(alive.Path) })},
		"10.0.0.3": {Owner: ipam.Owner{ContainerID: "b", IfName: "eth0"}, Netns: inNode(t, node, func() ipam.Netns { return Identify(gone.Path) })},
		"10.0.0.4": {Owner: ipam.Owner{ContainerID: "c", IfName: "eth0"}},
	}
	s, err := disk.Open(t.TempDir(), "net")
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
	gone.Delete(t)
	judgeSoon(t, node, claims["10.0.0.3"].Netns, Gone)
	done := inNode(t, node, func() []Verdict {
		vs, err := Survey(s, &Prober{})
		if err != nil || len(vs) != 4 {
			t.Errorf("Survey = %+v, %v", vs, err)
		}
		done, err := Reclaim(s, vs)
		if err != nil {
			t.Error(err)
		}
		return done
	})
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

// TestHeldNamespaces: a namespace whose path is gone stays unknown while
// anything holds it: a process living in it, a bind mount in another mount
// namespace, a socket of a process that left it (the last two invisible
// from here); it is gone once released.
func TestHeldNamespaces(t *testing.T) {
	node := netnstest.New(t, "cni-stale-node")
	holders := []struct {
		name, reason string
		hold         func(t *testing.T, ns *netnstest.NS) func()
	}{
		{"process", "still exists: process", func(t *testing.T, ns *netnstest.NS) func() {
			sleeper := exec.Command("ip", "netns", "exec", ns.Name, "sleep", "60")
			if err := sleeper.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool {
				return Identify(fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid)).Ino == Identify(ns.Path).Ino
			})
			return func() { sleeper.Process.Kill(); sleeper.Wait() }
		}},
		{"mount in another mount namespace", "held out of sight", func(t *testing.T, ns *netnstest.NS) func() {
			return netnstest.HoldByMount(t, ns.Path)
		}},
		{"socket", "held out of sight", func(t *testing.T, ns *netnstest.NS) func() {
			return netnstest.HoldBySocket(t, ns.Path)
		}},
	}
	for _, h := range holders {
		t.Run(h.name, func(t *testing.T) {
			pod := netnstest.New(t, "cni-stale")
			id := inNode(t, node, func() ipam.Netns { return Identify(pod.Path) })
			if id.Ino == 0 || id.NodeIno == 0 || id.Path != pod.Path {
				t.Fatalf("Identify(%s) = %+v", pod.Path, id)
			}
			if v := judgeSoon(t, node, id, Alive); v.State != Alive {
				t.Fatalf("mounted namespace: %s (%s)", v.State, v.Reason)
			}
			release := h.hold(t, pod)
			pod.Remove(t)
			if v := judgeSoon(t, node, id, Unknown); v.State != Unknown || !strings.Contains(v.Reason, h.reason) {
				t.Fatalf("held by a %s: %s (%s), want unknown with %q", h.name, v.State, v.Reason, h.reason)
			}
			release()
			if v := judgeSoon(t, node, id, Gone); v.State != Gone || !strings.Contains(v.Reason, "is free") {
				t.Fatalf("released: %s (%s)", v.State, v.Reason)
			}
		})
	}
	if plain := Identify(t.TempDir()); plain.Ino != 0 {
		t.Fatalf("a directory was identified as a namespace: %+v", plain)
	}
}

// TestReusedNSID: the node hands a freed nsid to the next namespace; the
// reservation of the freed one is still proved gone, since its nsid now
// names another namespace. In another node's namespace nothing is proved.
func TestReusedNSID(t *testing.T) {
	node := netnstest.New(t, "cni-stale-node")
	old := netnstest.New(t, "cni-stale")
	dead := inNode(t, node, func() ipam.Netns { return Identify(old.Path) })
	old.Delete(t)
	judgeSoon(t, node, dead, Gone)
	next := netnstest.New(t, "cni-stale")
	reused := inNode(t, node, func() ipam.Netns { return Identify(next.Path) })
	if reused.NSID != dead.NSID {
		t.Skipf("the kernel gave nsid %d, not the freed %d", reused.NSID, dead.NSID)
	}
	v := judgeSoon(t, node, dead, Gone)
	if v.State != Gone || !strings.Contains(v.Reason, "now names another namespace") {
		t.Fatalf("nsid reused: %s (%s)", v.State, v.Reason)
	}
	other := netnstest.New(t, "cni-stale-node")
	if v := inNode(t, other, func() Verdict { return (&Prober{}).Judge(ipam.Reservation{Netns: dead}) }); v.State != Unknown {
		t.Fatalf("judged in another node namespace: %s (%s)", v.State, v.Reason)
	}
}

// TestInodeReuse: the kernel gives a new namespace the inode number of one
// just deleted. The dead one is still proved gone, whether the new one is
// mounted elsewhere or at the old path.
func TestInodeReuse(t *testing.T) {
	node := netnstest.New(t, "cni-stale-node")
	old := netnstest.New(t, "cni-stale")
	dead := inNode(t, node, func() ipam.Netns { return Identify(old.Path) })
	old.Delete(t)
	reusedBy := func(name string) bool {
		for range 20 {
			if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
			if Identify("/run/netns/"+name).Ino == dead.Ino {
				return true
			}
			exec.Command("ip", "netns", "delete", name).Run()
			unix.Nanosleep(&unix.Timespec{Nsec: 50e6}, nil) // the kernel frees namespaces asynchronously
		}
		return false
	}
	for _, name := range []string{old.Name + "-new", old.Name} {
		if !reusedBy(name) {
			t.Skipf("the kernel did not reuse inode %d", dead.Ino)
		}
		if v := judgeSoon(t, node, dead, Gone); v.State != Gone {
			t.Fatalf("with %s reusing its inode: %s (%s)", name, v.State, v.Reason)
		}
		exec.Command("ip", "netns", "delete", name).Run()
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
