package disk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/netconf"
)

// lockWait bounds the wait for a network's lock. A verb holds it for
// milliseconds; a holder that is stopped (SIGSTOP, a debugger) or hung holds
// it until it ends, and the reference plugin would wait for it forever. Ten
// seconds, as the suite waits for the xtables lock (iptables -w 10); tests
// shorten it.
var lockWait = 10 * time.Second

// lockNetwork opens (creating) the network's lock file and takes its flock,
// the lock the reference plugin takes too.
func lockNetwork(dir *os.File) (*os.File, error) {
	f, err := openLock(dir)
	if err != nil {
		return nil, err
	}
	if err := waitLock(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openLock opens the lock file. Anything but a regular file at its name is
// left for a hand to remove (and never opened: a FIFO would block, a device
// act): replacing it behind the back of another process about to lock it
// would let two verbs run at once.
func openLock(dir *os.File) (*os.File, error) {
	path := filepath.Join(dir.Name(), lockName)
	if st, err := statAt(dir, lockName); err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, badLock(path, kindOf(st.Mode))
	}
	fd, err := unix.Openat(int(dir.Fd()), lockName, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("looking at the lock file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG { // swapped since the look above
		f.Close()
		return nil, badLock(path, kindOf(st.Mode))
	}
	return f, nil
}

func badLock(path, kind string) error {
	return netconf.Errorf(netconf.CodeIO, "%s is %s, not host-local's lock file, so no ADD or DEL of this network can run: remove it by hand once you have checked that nothing needs it (host-local creates the file again)", path, kind)
}

// waitLock takes f's flock, waiting at most lockWait. The blocking flock
// runs on a duplicate of f's descriptor (the same open file, so the same
// lock), which only the waiting goroutine uses: given up on, that goroutine
// ends when the holder lets go, and closing the duplicate then drops the
// lock it got, f being closed already.
func waitLock(f *os.File) error {
	err := flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return lockErr(f, err)
	}
	dup, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return lockErr(f, err)
	}
	got := make(chan error, 1)
	go func() {
		err := flock(dup, unix.LOCK_EX)
		unix.Close(dup)
		got <- err
	}()
	timer := time.NewTimer(lockWait)
	defer timer.Stop()
	select {
	case err := <-got:
		return lockErr(f, err)
	case <-timer.C:
		return netconf.Errorf(netconf.CodeTryAgainLater, "waited %v for the lock %s: %s holds it and has not let go; if that is a stopped or hung process, end it (`fuser -v %s` lists what has the file open): until then no ADD or DEL of this network can run", lockWait, f.Name(), holders(f), f.Name())
	}
}

func flock(fd, how int) error {
	for {
		if err := unix.Flock(fd, how); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func lockErr(f *os.File, err error) error {
	if err != nil {
		return fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return nil
}

// holders names the processes that /proc/locks says hold f's flock, and
// whether they are stopped; "another process" when it cannot tell. The
// kernel notes the process that took the lock: one that has since exited,
// leaving the lock to a child, is not named.
func holders(f *os.File) string {
	var st unix.Stat_t
	data, err := os.ReadFile("/proc/locks")
	if err != nil || unix.Fstat(int(f.Fd()), &st) != nil {
		return "another process"
	}
	file := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	var out []string
	for line := range strings.Lines(string(data)) {
		// "3: FLOCK  ADVISORY  WRITE 4242 00:2a:1234 0 EOF"; a waiter's line has "->" after "3:".
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != file {
			continue
		}
		if about, ok := describe(fields[4]); ok {
			out = append(out, "process "+fields[4]+about)
		}
	}
	if len(out) == 0 {
		return "another process"
	}
	return strings.Join(out, ", ")
}

// describe is " (name, stopped)" for a living process, from /proc/PID/stat.
func describe(pid string) (string, bool) {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	lo, hi := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if err != nil || lo < 0 || hi < lo || hi+3 > len(data) {
		return "", false
	}
	name := string(data[lo+1 : hi])
	if state := data[hi+2]; state == 'T' || state == 't' {
		return " (" + name + ", stopped)", true
	}
	return " (" + name + ")", true
}
