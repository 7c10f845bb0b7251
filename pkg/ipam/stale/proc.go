package stale

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// nsID is a namespace's device and inode: which namespace it is, but for
// inode numbers reused after a namespace is freed.
type nsID struct{ dev, ino uint64 }

// holder is something holding a namespace: what, for messages, and a path
// through which the namespace can be opened.
type holder struct{ what, path string }

// namespacesInUse lists the network namespaces that something on the node
// still holds, with what holds each: an nsfs mount in our mount namespace,
// a task living in it, or a file descriptor open on it. A namespace none of
// these holds is freed by the kernel. Processes that exit during the scan
// are skipped, and so are those even root may not inspect (a sandbox's
// agent marked undumpable, as on some VMs): the scan only adds to the proof
// by path, which stands on its own. Anything else unreadable fails the scan,
// and with it every proof.
func namespacesInUse(proc string) (map[nsID][]holder, error) {
	used := map[nsID][]holder{}
	if err := nsfsMounts(filepath.Join(proc, "self", "mountinfo"), used); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", proc, err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if err := processNamespaces(filepath.Join(proc, e.Name()), e.Name(), used); err != nil {
			return nil, err
		}
	}
	return used, nil
}

// skip reports errors of a process or task that ended while we looked, or
// that we may not inspect.
func skip(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
}

// processNamespaces adds the network namespaces of pid's tasks and of its
// open namespace files.
func processNamespaces(dir, pid string, used map[nsID][]holder) error {
	tasks, err := os.ReadDir(filepath.Join(dir, "task"))
	if skip(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing the tasks of process %s: %w", pid, err)
	}
	for _, t := range tasks {
		var st unix.Stat_t
		path := filepath.Join(dir, "task", t.Name(), "ns", "net")
		err := unix.Stat(path, &st)
		if skip(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading the namespace of task %s: %w", t.Name(), err)
		}
		used[nsID{st.Dev, st.Ino}] = append(used[nsID{st.Dev, st.Ino}], holder{"task " + t.Name() + " of process " + pid, path})
	}
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if skip(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing the files of process %s: %w", pid, err)
	}
	for _, fd := range fds {
		link := filepath.Join(dir, "fd", fd.Name())
		target, err := os.Readlink(link)
		if err != nil || !strings.HasPrefix(target, "net:[") {
			continue // closed meanwhile, or not a network namespace
		}
		var st unix.Stat_t
		if err := unix.Stat(link, &st); err == nil {
			id := nsID{st.Dev, st.Ino}
			used[id] = append(used[id], holder{"file descriptor " + fd.Name() + " of process " + pid, link})
		}
	}
	return nil
}

// nsfsMounts adds the network namespaces mounted in our mount namespace.
func nsfsMounts(path string, used map[nsID][]holder) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading the mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if id, where, ok := parseNsfsMount(sc.Text()); ok {
			used[id] = append(used[id], holder{"the mount at " + where, where})
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}

// parseNsfsMount reads one line of mountinfo ("36 25 0:4 net:[4026532281]
// /run/netns/x rw shared:5 - nsfs nsfs rw") when it mounts a network
// namespace.
func parseNsfsMount(line string) (nsID, string, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	f, g := strings.Fields(pre), strings.Fields(post)
	if !ok || len(f) < 5 || len(g) < 1 || g[0] != "nsfs" {
		return nsID{}, "", false
	}
	num, ok1 := strings.CutPrefix(f[3], "net:[")
	num, ok2 := strings.CutSuffix(num, "]")
	if !ok1 || !ok2 {
		return nsID{}, "", false
	}
	ino, err := strconv.ParseUint(num, 10, 64)
	major, minor, ok := strings.Cut(f[2], ":")
	maj, err1 := strconv.ParseUint(major, 10, 32)
	mnr, err2 := strconv.ParseUint(minor, 10, 32)
	if err != nil || !ok || err1 != nil || err2 != nil {
		return nsID{}, "", false
	}
	return nsID{unix.Mkdev(uint32(maj), uint32(mnr)), ino}, unescapeMount(f[4]), true
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
