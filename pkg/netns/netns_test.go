package netns_test

import (
	"errors"
	"os"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// hereInode identifies the calling thread's namespace by its inode.
func hereInode() (uint64, error) {
	f, err := netns.Here()
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

func mustHereInode(t *testing.T) uint64 {
	t.Helper()
	ino, err := hereInode()
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestGoStaysInCallersNamespace switches the test's thread alone into a
// namespace (netns.Do, as a test or an in-process runtime does) and starts
// goroutines from there: each must run in that namespace, not in the one of
// whichever thread Go's scheduler gives it, which is the process's.
func TestGoStaysInCallersNamespace(t *testing.T) {
	node := netnstest.New(t, "nsgo")
	root := mustHereInode(t)
	node.Do(t, func() error {
		want := mustHereInode(t)
		if want == root {
			t.Fatal("netns.Do did not switch the thread")
		}
		var got [16]uint64
		fns := make([]func() error, len(got))
		for i := range fns {
			fns[i] = func() (err error) {
				got[i], err = hereInode()
				return err
			}
		}
		if err := netns.Concurrently(fns...); err != nil {
			t.Fatal(err)
		}
		for i, ino := range got {
			if ino != want {
				t.Errorf("goroutine %d ran in net:[%d], the caller is in net:[%d] (the process in net:[%d])", i, ino, want, root)
			}
		}
		return nil
	})
	if mustHereInode(t) != root {
		t.Error("the test's thread did not come back")
	}
}

// TestConcurrentlyJoinsErrors: every function runs, every error is kept.
func TestConcurrentlyJoinsErrors(t *testing.T) {
	errA, errB := errors.New("a"), errors.New("b")
	ran := make([]bool, 3)
	err := netns.Concurrently(
		func() error { ran[0] = true; return errA },
		func() error { ran[1] = true; return nil },
		func() error { ran[2] = true; return errB },
	)
	if !errors.Is(err, errA) || !errors.Is(err, errB) || !ran[0] || !ran[1] || !ran[2] {
		t.Errorf("error %v, ran %v; want a and b joined, all three run", err, ran)
	}
}

// TestDoFileHereWithoutSysAdmin: a thread without CAP_SYS_ADMIN (subnetd in
// the DaemonSet) may "enter" the namespace it is in: DoFile does not switch,
// while entering another is refused.
func TestDoFileHereWithoutSysAdmin(t *testing.T) {
	other := netnstest.New(t, "nscap")
	target, err := netns.Open(other.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	done := make(chan error)
	go func() {
		// Never unlocked: the thread without the capability ends with this
		// goroutine.
		runtime.LockOSThread()
		done <- withoutSysAdmin(target)
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// withoutSysAdmin drops CAP_SYS_ADMIN from the calling thread, then enters
// its own namespace and tries another.
func withoutSysAdmin(other *os.File) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[unix.CAP_SYS_ADMIN/32].Effective &^= 1 << (unix.CAP_SYS_ADMIN % 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return err
	}
	here, err := netns.Here()
	if err != nil {
		return err
	}
	defer here.Close()
	ran := false
	if err := netns.DoFile(here, func() error { ran = true; return nil }); err != nil || !ran {
		return errors.Join(errors.New("DoFile into the thread's own namespace failed without CAP_SYS_ADMIN"), err)
	}
	if err := netns.DoFile(other, func() error { return nil }); !errors.Is(err, syscall.EPERM) {
		return errors.Join(errors.New("entering another namespace without CAP_SYS_ADMIN must fail with EPERM"), err)
	}
	return nil
}
