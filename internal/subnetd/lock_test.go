package subnetd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLockDataDir: a second lock of the same --data-dir, the daemon's or
// --cleanup's, fails after a short wait naming the file and the holder's
// PID; once the holder is gone the next one takes it. --cleanup where no
// subnetd ever ran creates nothing.
func TestLockDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sd")
	if f, err := lockDataDir(dir, false); f != nil || err != nil {
		t.Fatalf("lock for --cleanup where no subnetd ran: %v, %v; want nothing", f, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the lock for --cleanup created %s: %v", dir, err)
	}
	first, err := lockDataDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, create := range []bool{true, false} {
		_, err = lockDataDir(dir, create)
		if !errors.Is(err, errRunning) || !strings.Contains(err.Error(), filepath.Join(dir, lockName)) ||
			!strings.Contains(err.Error(), fmt.Sprintf("PID %d", os.Getpid())) {
			t.Fatalf("second lock (create %v): %v; want one naming %s and PID %d", create, err, filepath.Join(dir, lockName), os.Getpid())
		}
	}
	first.Close()
	second, err := lockDataDir(dir, true)
	if err != nil {
		t.Fatalf("lock after the holder closed it: %v", err)
	}
	second.Close()
}
