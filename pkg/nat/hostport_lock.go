package nat

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// SweepLock is the file that serializes the removals of port-mapping
// rules on a node.
const SweepLock = "/run/cni/portmap.lock"

// LockSweeps serializes DEL and GC of port mappings, of both backends.
// Two DELs of the last two attachments that ran side by side would each
// see the other's rules and both keep the shared chains; one after the
// other, the second removes them. Correctness does not depend on it (every
// transaction asserts what it relies on), so a lock that cannot be taken
// is skipped. The returned function releases it.
func LockSweeps() (unlock func()) {
	f, err := os.OpenFile(SweepLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil && os.MkdirAll(filepath.Dir(SweepLock), 0o755) == nil {
		f, err = os.OpenFile(SweepLock, os.O_CREATE|os.O_RDWR, 0o600)
	}
	if err != nil {
		return func() {}
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return func() {}
	}
	return func() { f.Close() }
}

// Backoff waits before attempt n+1 of a transaction that lost a race: a
// few random milliseconds, growing with n, so that the writers that
// collided do not collide again.
func Backoff(n int) {
	time.Sleep(time.Duration(n+1) * time.Duration(1+rand.IntN(4)) * time.Millisecond)
}
