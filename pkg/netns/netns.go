// Package netns runs code inside another network namespace, and goroutines
// inside the caller's. Go schedules goroutines on many OS threads while a
// namespace belongs to one thread, so Do locks the goroutine to its thread,
// switches, and switches back; a thread that cannot switch back is never
// reused. It is the one place that opens a thread's namespace file.
//
// Of the suite it imports only pkg/netconf (the error code of a missing
// namespace).
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/netconf"
)

// ErrGone marks a namespace path that no longer exists (the container is gone).
var ErrGone = errors.New("network namespace does not exist")

// Open opens a namespace file (e.g. /var/run/netns/x or /proc/<pid>/ns/net)
// and checks that it is a network namespace. Whatever else the path names is
// refused before it is opened: opening a FIFO would wait for a writer.
func Open(path string) (*os.File, error) {
	info, err := os.Stat(path)
	if err == nil && !info.Mode().IsRegular() {
		return nil, notNetns(path)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrGone)
	}
	if err != nil {
		return nil, netconf.Errorf(netconf.CodeIO, "opening network namespace %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || (st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC) {
		f.Close()
		return nil, notNetns(path)
	}
	return f, nil
}

func notNetns(path string) error {
	return netconf.Errorf(netconf.CodeInvalidEnv, "CNI_NETNS %s is not a network namespace; pass /var/run/netns/<name> or /proc/<pid>/ns/net", path)
}

// Do runs fn with the calling goroutine inside the namespace at path.
func Do(path string, fn func() error) error {
	target, err := Open(path)
	if err != nil {
		return err
	}
	defer target.Close()
	return DoFile(target, fn)
}

// DoFile is Do with an already open namespace. When the thread is in target
// already, fn runs without switching: entering a namespace, even one's own,
// needs CAP_SYS_ADMIN, which an unprivileged caller (subnetd in the
// DaemonSet has NET_ADMIN and NET_RAW only) lacks.
func DoFile(target *os.File, fn func() error) error {
	runtime.LockOSThread()
	origin, err := Here()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer origin.Close()
	if same(origin, target) {
		defer runtime.UnlockOSThread()
		return fn()
	}
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering network namespace %s: %w", target.Name(), err)
	}
	fnErr := fn()
	if err := unix.Setns(int(origin.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime discards it when the goroutine exits.
		return errors.Join(fnErr, fmt.Errorf("returning from network namespace %s: %w", target.Name(), err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Here opens the network namespace of the calling thread. A goroutine not
// locked to its thread may be on any thread not locked, and those are all
// in the process's namespace: only locked threads are switched (Do).
func Here() (*os.File, error) {
	// The thread's own path rather than /proc/thread-self: the file's name
	// shows in errors of other threads (DoFile's, under Go).
	f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil, fmt.Errorf("opening the current network namespace: %w", err)
	}
	return f, nil
}

// same reports whether two namespace files are one namespace.
func same(a, b *os.File) bool {
	var sa, sb unix.Stat_t
	return unix.Fstat(int(a.Fd()), &sa) == nil && unix.Fstat(int(b.Fd()), &sb) == nil &&
		sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// Go runs fn on a new goroutine inside the network namespace of the calling
// thread and delivers fn's error on the returned channel, which holds it
// until read. A goroutine runs on any thread, in whatever namespace that
// thread is in, and a caller (a test, a runtime running a plugin in-process,
// a daemon run on one thread of a node's namespace) may have switched only
// its own thread: without this, the goroutine's netlink and iptables calls,
// and the programs it starts, would reach another namespace. fn runs locked
// to its thread, through DoFile; a thread left in another namespace ends
// with the goroutine instead of running other code.
func Go(fn func() error) <-chan error {
	done := make(chan error, 1)
	here, err := Here()
	if err != nil {
		done <- err
		return done
	}
	go func() {
		defer here.Close()
		done <- DoFile(here, fn)
	}()
	return done
}

// Concurrently runs each fn through Go, all at once, and joins their errors.
func Concurrently(fns ...func() error) error {
	results := make([]<-chan error, len(fns))
	for i, fn := range fns {
		results[i] = Go(fn)
	}
	errs := make([]error, len(fns))
	for i, r := range results {
		errs[i] = <-r
	}
	return errors.Join(errs...)
}

// CNIError gives a vanished namespace the CNI code for an unknown container
// (3) and a message that says what it means; other errors pass unchanged.
func CNIError(err error, path string) error {
	if errors.Is(err, ErrGone) {
		return netconf.Errorf(netconf.CodeUnknownContainer, "network namespace %s does not exist; the container is gone or CNI_NETNS is wrong", path)
	}
	return err
}
