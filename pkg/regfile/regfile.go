// Package regfile reads the small files that the suite's programs find in
// places others can write to (subnet.env, saved configurations, state
// directories): regular files only, and never more than a bound. Whatever
// else a path may name is refused before it is read, and without the open
// blocking (a FIFO with no writer) or doing what opening some devices does.
// Replace writes such a file so that its readers never see a part of it.
// It imports nothing of the suite.
package regfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ErrNotRegular marks a path that names a directory, a FIFO, a device,
	// a socket, or (with NoFollow) a symlink.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge marks a file longer than the bound its reader set.
	ErrTooLarge = errors.New("file too large")
)

// Links says whether the last element of a path may be a symlink.
type Links int

const (
	// Follow reads the file a symlink names: an operator may point a
	// configured path at a file elsewhere.
	Follow Links = iota
	// NoFollow refuses a symlink: in a directory only the suite writes to,
	// a symlink is someone else's.
	NoFollow
)

// Read returns the content of the regular file at path, at most max bytes,
// and what fstat said of it. A missing file wraps fs.ErrNotExist; anything
// but a regular file wraps ErrNotRegular, a longer file ErrTooLarge (read no
// further than max+1 bytes).
func Read(path string, max int64, links Links) ([]byte, fs.FileInfo, error) {
	stat, flags := os.Stat, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK
	if links == NoFollow {
		stat, flags = os.Lstat, flags|unix.O_NOFOLLOW
	}
	// Looked at before it is opened, since opening is what a device acts on;
	// looked at again once open, since the path may have changed in between.
	info, err := stat(path)
	if err != nil {
		return nil, nil, err
	}
	if err := regular(path, info); err != nil {
		return nil, info, err
	}
	f, err := os.OpenFile(path, flags, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, info, fmt.Errorf("%s became a symlink: %w", path, ErrNotRegular)
	}
	if err != nil {
		return nil, info, err
	}
	defer f.Close()
	if info, err = f.Stat(); err != nil {
		return nil, nil, err
	}
	if err := regular(path, info); err != nil {
		return nil, info, err
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, info, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, info, fmt.Errorf("%s is over %d bytes: %w", path, max, ErrTooLarge)
	}
	return data, info, nil
}

func regular(path string, info fs.FileInfo) error {
	if info.Mode().IsRegular() {
		return nil
	}
	return fmt.Errorf("%s is %s: %w", path, Kind(info.Mode()), ErrNotRegular)
}

// Kind names a file's type for messages: "a directory", "a FIFO", ...
func Kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file"
}

// Replace writes data to path with mode atomically: through a hidden file
// in the same directory, synced, then renamed over path, so that a reader
// sees the old content or the new, never a part (nor a half-written binary
// that kubelet would run).
func Replace(path string, data []byte, mode fs.FileMode) error {
	return replace(path, data, mode, true)
}

// ReplaceUnsynced is Replace without the sync, for a file that no crash of
// the machine can outlive in use (a network namespace's state: the crash
// ends the namespace too); a reader still never sees a part of it.
func ReplaceUnsynced(path string, data []byte, mode fs.FileMode) error {
	return replace(path, data, mode, false)
}

func replace(path string, data []byte, mode fs.FileMode, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), tempPrefix(filepath.Base(path))+"*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return nil
}

// A replace's temporary file is named "." + the file's name + "." + the
// digits os.CreateTemp picks, beside the file. A writer killed between its
// creation and its rename leaves it behind for good: the owner of the file
// removes those of a file it knows no replace is writing (RemoveTemps), and
// the others once older than StaleTemp (IsStaleTemp).
func tempPrefix(base string) string { return "." + base + "." }

// StaleTemp is the age past which a replace's temporary file is a leftover
// of a writer that died, not one being written.
const StaleTemp = time.Minute

// tempOf tells whether name is a replace's temporary file of the file
// named base.
func tempOf(name, base string) bool {
	digits, ok := strings.CutPrefix(name, tempPrefix(base))
	return ok && isDigits(digits)
}

// isTemp tells whether name is a replace's temporary file of any file.
func isTemp(name string) bool {
	i := strings.LastIndexByte(name, '.')
	return strings.HasPrefix(name, ".") && i > 1 && isDigits(name[i+1:])
}

func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

// RemoveTemps removes the temporary files that replaces of path left, for
// the owner of path at a moment when none can be running (the attachment's
// DEL, as the runtime runs no ADD of it meanwhile). None is success.
func RemoveTemps(path string) error {
	dir, base := filepath.Split(path)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing %s for the temporary files of %s: %w", dir, base, err)
	}
	var errs []error
	for _, e := range entries {
		if !tempOf(e.Name(), base) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// IsStaleTemp tells whether e, an entry of a directory replaces write in,
// is a replace's temporary file older than StaleTemp.
func IsStaleTemp(e fs.DirEntry) bool {
	if !e.Type().IsRegular() || !isTemp(e.Name()) {
		return false
	}
	info, err := e.Info()
	return err == nil && time.Since(info.ModTime()) > StaleTemp
}
