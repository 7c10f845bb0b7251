package hostport

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// SweepLock is the file that serializes the removals of port-mapping
// rules on a node; `cnictl reset` removes it.
const SweepLock = "/run/cni/portmap.lock"

// lockSweeps serializes DEL and GC of port mappings, of both backends.
// Two DELs of the last two attachments that ran side by side would each
// see the other's rules and both keep the shared chains; one after the
// other, the second removes them. Correctness does not depend on it (every
// transaction asserts what it relies on), so a lock that cannot be taken
// is skipped. The returned function releases it.
func lockSweeps() (unlock func()) {
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
