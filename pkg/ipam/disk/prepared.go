package disk

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
)

// prepared is the records of one owner, written and synced by a goroutine of
// their own while the verb waits for the lock, reads the index and looks for
// a free address: the fsync is the slowest step of a reservation (1-4 ms
// here, more while the disk is busy), and under the lock it would serialize
// concurrent ADDs and lengthen each one. Each record is an unnamed file of
// the network directory (O_TMPFILE) until Reserve links it to an address's
// name, so one that is never used, or whose process is killed, vanishes with
// its last descriptor and leaves nothing to clean up.
type prepared struct {
	owner ipam.Owner
	done  chan struct{} // closed when the writes are over
	files []*os.File    // written and synced, in order; the first used ones linked
	inos  []uint64
	used  int
}

// prepare starts writing n records of o in netDir. Where the filesystem or
// kernel has no unnamed files, or a write fails, fewer are prepared and
// Reserve writes the rest itself, as it does without preparation.
func prepare(netDir *os.File, o ipam.Owner, n int) *prepared {
	p := &prepared{owner: o, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for range n {
			f, ino, err := writeUnnamed(netDir, FormatRecord(o))
			if err != nil {
				return
			}
			p.files, p.inos = append(p.files, f), append(p.inos, ino)
		}
	}()
	return p
}

// writeUnnamed writes data to an unnamed file in dir (mode 0600, as
// writeTemp's) and syncs it.
func writeUnnamed(dir *os.File, data []byte) (*os.File, uint64, error) {
	fd, err := unix.Openat(int(dir.Fd()), ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, 0, err
	}
	f := os.NewFile(uintptr(fd), dir.Name()+"/(unnamed record)")
	var st unix.Stat_t
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = unix.Fstat(fd, &st)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Ino, nil
}

// next returns the inode of the next record of o not yet linked, once the
// writes are over; false when there is none (nil p, another owner, all
// used).
func (p *prepared) next(o ipam.Owner) (uint64, bool) {
	if p == nil || o != p.owner {
		return 0, false
	}
	<-p.done
	if p.used == len(p.files) {
		return 0, false
	}
	return p.inos[p.used], true
}

// fdDir is where a process's descriptors are files (a variable for tests).
var fdDir = "/proc/self/fd/"

// link gives the record next returned the name name in dir, and marks it
// used once it has it. An unnamed file is linked through its entry in
// fdDir, which needs no capability (AT_EMPTY_PATH does).
func (p *prepared) link(dir *os.File, name string) error {
	f := p.files[p.used]
	err := unix.Linkat(unix.AT_FDCWD, fdDir+strconv.Itoa(int(f.Fd())), int(dir.Fd()), name, unix.AT_SYMLINK_FOLLOW)
	if err == nil {
		p.used++
	}
	return err
}

// close waits for the writes and closes every record; those never linked go
// with their descriptor.
func (p *prepared) close() {
	if p == nil {
		return
	}
	<-p.done
	for _, f := range p.files {
		f.Close()
	}
	p.files = nil
}
