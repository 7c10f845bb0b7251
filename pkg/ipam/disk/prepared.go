package disk

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
)

// prepared is the records of one owner, written and synced by a goroutine of
// their own while the verb reads its configuration (BeginReserve), waits for
// the lock, reads the index and looks for a free address: the fsync is the
// slowest step of a reservation (1-4 ms here, more while the disk is busy),
// and under the lock it would serialize
// concurrent ADDs and lengthen each one. Each record is an unnamed file of
// the network directory (O_TMPFILE) until Reserve links it to an address's
// name, so one that is never used, or whose process is killed, vanishes with
// its last descriptor and leaves nothing to clean up.
type prepared struct {
	owner ipam.Owner
	wg    sync.WaitGroup // the writers still at work
	mu    sync.Mutex     // guards files and inos while the writers append
	files []*os.File     // written and synced; the first used ones linked
	inos  []uint64
	used  int
	// entry is an empty unnamed file for the owner's index entry, made
	// before the lock (linkEntry); nil once used or when it could not be.
	entry *os.File
}

// prepare starts writing n records of o in netDir, and makes the empty file
// of o's index entry meanwhile. Where the filesystem or kernel has no
// unnamed files, or a write fails, fewer are prepared and Reserve writes the
// rest itself, as it does without preparation.
func prepare(netDir *os.File, o ipam.Owner, n int) *prepared {
	p := &prepared{owner: o}
	p.more(netDir, n)
	p.entry, _ = openUnnamed(netDir, "(unnamed index entry)")
	return p
}

// more starts writing n more records. All records of one owner are the
// same bytes, so the order in which they are finished does not matter.
func (p *prepared) more(netDir *os.File, n int) {
	if n <= 0 {
		return
	}
	p.wg.Go(func() {
		for range n {
			f, ino, err := writeUnnamed(netDir, FormatRecord(p.owner))
			if err != nil {
				return
			}
			p.mu.Lock()
			p.files, p.inos = append(p.files, f), append(p.inos, ino)
			p.mu.Unlock()
		}
	})
}

// openUnnamed makes an empty unnamed file in dir, mode 0600 as writeTemp's.
// Creating a file is the costly part of writing a new one on ext4 without a
// journal (up to ~0.7 ms in a strace here: the inode allocator skips
// recently deleted inodes one by one), so it is done before the lock,
// beside the records' fsync.
func openUnnamed(dir *os.File, what string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), dir.Name()+"/"+what), nil
}

// writeUnnamed writes data to an unnamed file in dir and syncs it.
func writeUnnamed(dir *os.File, data []byte) (*os.File, uint64, error) {
	f, err := openUnnamed(dir, "(unnamed record)")
	if err != nil {
		return nil, 0, err
	}
	var st unix.Stat_t
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = unix.Fstat(int(f.Fd()), &st)
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
	p.wg.Wait()
	if p.used == len(p.files) {
		return 0, false
	}
	return p.inos[p.used], true
}

// fdDir is where a process's descriptors are files (a variable for tests).
var fdDir = "/proc/self/fd/"

// link gives the record next returned the name name in dir, and marks it
// used once it has it.
func (p *prepared) link(dir *os.File, name string) error {
	err := linkUnnamed(p.files[p.used], dir, name)
	if err == nil {
		p.used++
	}
	return err
}

// linkEntry writes data into the prepared entry file and gives it the name
// name in dir, where nothing is: true when it did. Written before it has a
// name, the entry appears whole, as by rename. The file is tried once, even
// when the link failed (a name that appeared meanwhile, or no /proc): the
// caller then writes the entry itself.
func (p *prepared) linkEntry(dir *os.File, name string, data []byte) bool {
	if p == nil || p.entry == nil {
		return false
	}
	if _, err := statAt(dir, name); !errors.Is(err, fs.ErrNotExist) {
		return false // an entry to rewrite in place, or what overwriteAt replaces
	}
	f := p.entry
	p.entry = nil
	defer f.Close()
	_, err := f.Write(data)
	return err == nil && linkUnnamed(f, dir, name) == nil
}

// linkUnnamed gives the unnamed file f the name name in dir, through its
// entry in fdDir, which needs no capability (AT_EMPTY_PATH does); EEXIST
// when the name is taken.
func linkUnnamed(f *os.File, dir *os.File, name string) error {
	return unix.Linkat(unix.AT_FDCWD, fdDir+strconv.Itoa(int(f.Fd())), int(dir.Fd()), name, unix.AT_SYMLINK_FOLLOW)
}

// close waits for the writes and closes every record; those never linked go
// with their descriptor.
func (p *prepared) close() {
	if p == nil {
		return
	}
	p.wg.Wait()
	for _, f := range p.files {
		f.Close()
	}
	p.files = nil
	if p.entry != nil {
		p.entry.Close()
		p.entry = nil
	}
}
