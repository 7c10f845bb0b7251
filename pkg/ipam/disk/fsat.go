package disk

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Every entry the store reads, writes or removes is named by one path
// component relative to an open directory (the network's, .cnisuite,
// owners) and opened with O_NOFOLLOW: a symbolic link anywhere below the
// network directory is never followed, so nothing outside it is read,
// written or removed. Removal is unlinkat, which never follows a link and
// never removes a directory.

// wrongType is an entry that is not a regular file where the store reads
// one, or not a directory where it keeps one of its own.
type wrongType struct {
	path, kind string
	st         unix.Stat_t
}

func (e *wrongType) Error() string { return e.path + " is " + e.kind }

// kindOf names a file type for messages.
func kindOf(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a named pipe (FIFO)"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	}
	return "a file of unknown type"
}

func pathErr(op string, dir *os.File, name string, err error) error {
	return &fs.PathError{Op: op, Path: filepath.Join(dir.Name(), name), Err: err}
}

// statAt describes name in dir itself, a symbolic link included.
func statAt(dir *os.File, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, pathErr("stat", dir, name, err)
	}
	return st, nil
}

// readAt reads at most limit+1 bytes of the regular file name in dir (the
// caller tells a too long file by its length). Anything else there is a
// *wrongType: it is looked at before it is opened, so that a FIFO or a
// device is never opened, and again once open, in case it was swapped
// meanwhile (O_NONBLOCK keeps a FIFO swapped in from blocking the open).
func readAt(dir *os.File, name string, limit int) ([]byte, unix.Stat_t, error) {
	st, err := statAt(dir, name)
	if err != nil {
		return nil, st, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, st, &wrongType{filepath.Join(dir.Name(), name), kindOf(st.Mode), st}
	}
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, st, pathErr("open", dir, name, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name))
	defer f.Close()
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, st, &fs.PathError{Op: "stat", Path: f.Name(), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, st, &wrongType{f.Name(), kindOf(st.Mode), st}
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	return data, st, err
}

// openDir opens the directory name in dir, creating it when missing (and
// saying so); any other entry there is a *wrongType.
func openDir(dir *os.File, name string) (_ *os.File, created bool, _ error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(int(dir.Fd()), name, flags, 0)
	if errors.Is(err, unix.ENOENT) {
		if err := unix.Mkdirat(int(dir.Fd()), name, dirMode); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, false, pathErr("mkdir", dir, name, err)
		}
		created = true
		fd, err = unix.Openat(int(dir.Fd()), name, flags, 0)
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		if st, serr := statAt(dir, name); serr == nil {
			return nil, false, &wrongType{filepath.Join(dir.Name(), name), kindOf(st.Mode), st}
		}
	}
	if err != nil {
		return nil, false, pathErr("open", dir, name, err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), created, nil
}

// listAt lists dir. The entries' types come from the directory itself;
// their Info is not to be used (it would look them up by path).
func listAt(dir *os.File) ([]fs.DirEntry, error) {
	fd, err := unix.Openat(int(dir.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir.Name(), Err: err}
	}
	f := os.NewFile(uintptr(fd), dir.Name())
	defer f.Close()
	return f.ReadDir(-1)
}

// removeAt unlinks name in dir: a file or a symbolic link itself, never a
// directory. A missing name is not an error.
func removeAt(dir *os.File, name string) error {
	if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return pathErr("remove", dir, name, err)
	}
	return nil
}

// writeTemp writes data to a new file in dir named prefix and a random
// suffix (mode 0600), synced when asked, and returns its name and inode.
func writeTemp(dir *os.File, prefix string, data []byte, sync bool) (_ string, ino uint64, retErr error) {
	var name string
	var fd int
	var err error = unix.EEXIST
	for tries := 0; errors.Is(err, unix.EEXIST) && tries < 10; tries++ {
		name = prefix + strconv.FormatUint(rand.Uint64(), 36)
		fd, err = unix.Openat(int(dir.Fd()), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		return "", 0, fmt.Errorf("creating a file in %s: %w", dir.Name(), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name))
	defer func() {
		if err := f.Close(); err != nil && retErr == nil {
			retErr = fmt.Errorf("writing %s: %w", f.Name(), err)
		}
		if retErr != nil {
			_ = removeAt(dir, name)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return "", 0, fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return "", 0, fmt.Errorf("syncing %s: %w", f.Name(), err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", 0, fmt.Errorf("looking at %s: %w", f.Name(), err)
	}
	return name, st.Ino, nil
}

// overwriteAt writes data over name in dir in place when name is a regular
// file, keeping its inode, and by replaceAt otherwise: a missing file (so
// that a write that fails, the disk full, leaves no trace), or a symbolic
// link or FIFO there (replaced itself, never opened). For the index and the
// round-robin note, which are read only under the lock and rebuilt or
// ignored when a failed or killed verb left them torn: a new file per write
// costs an inode created and one deleted, and on ext4 without a journal
// every creation scans the inode table for recently deleted inodes
// (find_inode_bit, recently_deleted), which our own churn fills (make
// bench: ~0.3 ms per creation on this machine's disk).
func overwriteAt(dir *os.File, prefix, name string, data []byte) error {
	st, err := statAt(dir, name)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return replaceAt(dir, prefix, name, data)
	}
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return replaceAt(dir, prefix, name, data) // replaced meanwhile by what cannot be opened
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name))
	defer f.Close()
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return replaceAt(dir, prefix, name, data)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	return nil
}

// replaceAt writes data to name in dir by rename, so that readers never see
// it half written. The data is first written under a name starting with
// prefix, the one RemoveStale removes in dir, should the writer die before
// the rename. Rename replaces a symbolic link or a FIFO at name itself; a
// directory there makes it fail with EISDIR.
func replaceAt(dir *os.File, prefix, name string, data []byte) error {
	tmp, _, err := writeTemp(dir, prefix, data, false)
	if err != nil {
		return err
	}
	if err := unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), name); err != nil {
		_ = removeAt(dir, tmp)
		return pathErr("replace", dir, name, err)
	}
	return nil
}
