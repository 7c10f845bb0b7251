package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// MountNS is a private mount namespace kept alive by a sleeping process:
// mounts made in it are seen only by what runs in it (through Enter) and by
// the test through its /proc/PID/root, and vanish when it ends, at the
// latest when the test does.
type MountNS struct {
	cmd *exec.Cmd
}

// NewMountNS starts the namespace's process.
func NewMountNS(t testing.TB) *MountNS {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "infinity")
	if err := cmd.Start(); err != nil {
		t.Skipf("needs unshare (util-linux): %v", err)
	}
	m := &MountNS{cmd: cmd}
	t.Cleanup(m.End)
	self, _ := os.Readlink("/proc/self/ns/mnt")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)); err == nil && ns != self {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare did not make a mount namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// End ends the namespace's process, and with it the namespace and its
// mounts; ending it twice is fine.
func (m *MountNS) End() {
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
}

// Enter is the prefix of a command run inside the namespace.
func (m *MountNS) Enter() []string {
	return []string{"nsenter", "--target", fmt.Sprint(m.cmd.Process.Pid), "--mount", "--"}
}

// Run runs a command inside the namespace and fails the test if it fails.
func (m *MountNS) Run(t testing.TB, args ...string) {
	t.Helper()
	run(t, append(m.Enter(), args...)...)
}

// Path is where the test sees p as the namespace sees it.
func (m *MountNS) Path(p string) string { return fmt.Sprintf("/proc/%d/root%s", m.cmd.Process.Pid, p) }
