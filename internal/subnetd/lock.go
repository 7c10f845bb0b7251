package subnetd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// lockName is the file in --data-dir whose lock marks the running subnetd.
const lockName = "subnetd.lock"

// errRunning says another subnetd holds the lock.
var errRunning = errors.New("another subnetd is running")

// lockWait is how long a start waits for the lock: long enough for an
// instance being stopped as this one starts to finish its exit.
const lockWait = time.Second

// lockDataDir takes the exclusive lock of dir, so that one subnetd (or
// --cleanup) at a time acts for the node: two would both renew the lease and
// program the devices, each undoing the other. The lock holds as long as
// the returned file stays open (the process's life), and the file holds
// the holder's PID, for the message a second instance gives. It is taken
// before anything is read or written. Without create (--cleanup), a
// missing lock file means that no subnetd runs there: nil, and nothing is
// created.
func lockDataDir(dir string, create bool) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	flags := os.O_RDWR
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating --data-dir: %w", err)
		}
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if !create && errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening the lock file: %w", err)
	}
	for deadline := time.Now().Add(lockWait); ; time.Sleep(50 * time.Millisecond) {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		retry := errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EINTR)
		if !retry || time.Now().After(deadline) {
			break
		}
	}
	if errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, fmt.Errorf("%w%s and holds %s: one subnetd runs per node and --data-dir; stop that one first (systemctl stop subnetd, or its pod)", errRunning, holder(path), path)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := writePID(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return f, nil
}

// holder names the lock's holder by the PID it wrote, when readable.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return ""
	}
	return fmt.Sprintf(" (PID %d)", pid)
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}
