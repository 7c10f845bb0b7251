package netnstest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/netns"
)

// The holders below keep a namespace alive after its path is deleted, in
// ways a look at this mount namespace and at /proc cannot trace back to it.
// Each returns a release; the test's end releases too.

// HoldByMount bind-mounts the namespace at path in a private mount
// namespace of a sleeping process, whose own network namespace is another.
func HoldByMount(t testing.TB, path string) (release func()) {
	t.Helper()
	target := filepath.Join(t.TempDir(), "held")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewMountNS(t)
	m.Run(t, "mount", "--bind", path, target)
	return m.End
}

// HoldBySocket opens a socket inside the namespace at path from this
// process, which then leaves the namespace: the socket alone holds it.
func HoldBySocket(t testing.TB, path string) (release func()) {
	t.Helper()
	fd, err := socketIn(path)
	if err != nil {
		t.Fatalf("opening a socket in %s: %v", path, err)
	}
	release = func() { _ = unix.Close(fd) }
	t.Cleanup(release)
	return release
}

// socketIn opens the socket on a goroutine of its own (netns.Go): a thread
// that cannot return to the test's namespace ends with that goroutine
// instead of running the test on.
func socketIn(path string) (int, error) {
	fd := -1
	err := <-netns.Go(func() error {
		return netns.Do(path, func() (err error) {
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			return err
		})
	})
	return fd, err
}

// Delete removes the namespace's path and waits until the kernel has let
// go of the namespace, which nothing else may hold. Its links go later, when
// the kernel's cleanup worker reaches it (a veth's peer elsewhere with them):
// a test that looks for them waits too (Eventually).
func (n *NS) Delete(t testing.TB) {
	t.Helper()
	n.Remove(t)(t)
}

// Remove removes the namespace's path; whatever else holds the namespace
// keeps it. The returned freed waits until the namespace can no longer be
// reached (once nothing holds it), failing the test after 5 s; the kernel
// tears it down after that, asynchronously.
func (n *NS) Remove(t testing.TB) (freed func(testing.TB)) {
	t.Helper()
	h, _, herr := unix.NameToHandleAt(unix.AT_FDCWD, n.Path, 0)
	run(t, "ip", "netns", "delete", n.Name)
	if herr != nil { // no file handles for namespaces before Linux 6.18
		return func(testing.TB) { time.Sleep(500 * time.Millisecond) }
	}
	return func(t testing.TB) {
		t.Helper()
		nsfs, err := os.Open("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		defer nsfs.Close()
		for range 250 {
			fd, err := unix.OpenByHandleAt(int(nsfs.Fd()), h, unix.O_RDONLY|unix.O_CLOEXEC)
			if errors.Is(err, unix.ESTALE) {
				return
			}
			if err != nil {
				t.Fatalf("looking for namespace %s by its handle: %v", n.Name, err)
			}
			unix.Close(fd)
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("namespace %s still exists 5 s after its deletion", n.Name)
	}
}

// Eventually calls left every 20 ms until it lists nothing, for at most 5 s,
// and returns its last list: what a test finds left over once the kernel's
// asynchronous teardown of deleted namespaces had the time to finish.
func Eventually(left func() []string) []string {
	l := left()
	for deadline := time.Now().Add(5 * time.Second); len(l) > 0 && time.Now().Before(deadline); l = left() {
		time.Sleep(20 * time.Millisecond)
	}
	return l
}
