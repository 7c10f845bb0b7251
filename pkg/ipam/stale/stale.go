// Package stale tells reservations whose owner is provably gone from those
// whose owner might be alive. A reservation records the namespace its
// attachment was added in (path, the namespace's device and inode, and its
// kernel ID where there is one); the owner is gone when that path no longer
// holds that namespace and nothing on the node (a mount, a task, an open
// file) holds it any more. The kernel reuses namespace inode numbers at once;
// without an ID, a namespace found with the recorded inode counts as ours.
// Whatever cannot be proved is Unknown, and only Gone is ever reclaimed.
package stale

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
)

// State is what is known of a reservation's owner.
type State string

const (
	Alive   State = "alive"   // its namespace is still at the recorded path
	Gone    State = "gone"    // provably dead: reclaimable
	Unknown State = "unknown" // no proof either way: kept
	Corrupt State = "corrupt" // the record names no owner: only GC frees it
)

// Verdict is a reservation with the state of its owner and why.
type Verdict struct {
	ipam.Reservation
	State  State
	Reason string
}

// Identify describes the namespace at path as ADD records it. The identity
// is left zero unless path is a namespace (nsfs): a plain file or a missing
// path proves nothing later.
func Identify(path string) ipam.Netns {
	n := ipam.Netns{Path: path}
	if path == "" {
		return n
	}
	f, err := os.Open(path)
	if err != nil {
		return n
	}
	defer f.Close()
	var fs unix.Statfs_t
	var st unix.Stat_t
	if unix.Fstatfs(int(f.Fd()), &fs) != nil || fs.Type != unix.NSFS_MAGIC || unix.Fstat(int(f.Fd()), &st) != nil {
		return n
	}
	n.Dev, n.Ino = st.Dev, st.Ino
	n.ID, _ = fileNamespaceID(f) // zero on kernels before 6.18
	return n
}

// nsGetID is NS_GET_ID, _IOR(0xb7, 13, __u64): the namespace's ID, unique
// for the boot (Linux 6.18+).
const nsGetID = 2<<30 | 8<<16 | 0xb7<<8 | 13

func fileNamespaceID(f *os.File) (uint64, error) {
	var id uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nsGetID, uintptr(unsafe.Pointer(&id))); errno != 0 {
		return 0, errno
	}
	return id, nil
}

// namespaceID reads the ID of the namespace at path.
func namespaceID(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return fileNamespaceID(f)
}

// Prober judges reservations. It looks at /proc once, on the first
// reservation that needs it, so one Prober serves one decision (one verb).
type Prober struct {
	Proc string // procfs mount; "/proc" when empty

	once sync.Once
	used map[nsID][]holder // namespaces something holds, and what
	err  error
}

// Judge returns the state of r's owner.
func (p *Prober) Judge(r ipam.Reservation) Verdict {
	v := Verdict{Reservation: r}
	switch {
	case errors.Is(r.Corrupt, ipam.ErrEmptyRecord):
		v.State, v.Reason = Gone, "empty record: the ADD that created it was stopped before writing it"
	case r.Corrupt != nil:
		v.State, v.Reason = Corrupt, r.Corrupt.Error()
	case r.Netns.Path == "":
		v.State, v.Reason = Unknown, "no namespace recorded for this record (written by another plugin or version, its index entry lost, or CNI_NETNS was empty)"
	case r.Netns.Ino == 0:
		v.State, v.Reason = Unknown, fmt.Sprintf("%s was not a network namespace at ADD", r.Netns.Path)
	default:
		v.State, v.Reason = p.netnsState(r.Netns)
	}
	return v
}

// netnsState compares the recorded namespace with what its path holds now,
// then looks for anything else holding it.
func (p *Prober) netnsState(n ipam.Netns) (State, string) {
	here, reason, err := atPath(n)
	if err != nil {
		return Unknown, err.Error()
	}
	if here {
		return Alive, reason
	}
	where, err := p.heldBy(n)
	if err != nil {
		return Unknown, fmt.Sprintf("%s, but whether something still holds net:[%d] is unknown: %v", reason, n.Ino, err)
	}
	if where != "" {
		return Unknown, fmt.Sprintf("%s, but net:[%d] is still held by %s", reason, n.Ino, where)
	}
	return Gone, reason
}

// atPath reports whether n's path still holds n's namespace, and how it
// knows; an error means it cannot tell.
func atPath(n ipam.Netns) (bool, string, error) {
	var st unix.Stat_t
	err := unix.Stat(n.Path, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, fmt.Sprintf("%s is gone", n.Path), nil
	case err != nil:
		return false, "", fmt.Errorf("cannot look at %s: %w", n.Path, err)
	case st.Dev != n.Dev || st.Ino != n.Ino:
		return false, fmt.Sprintf("%s no longer holds namespace net:[%d] (deleted, the path reused)", n.Path, n.Ino), nil
	case n.ID == 0:
		return true, fmt.Sprintf("namespace net:[%d] is at %s", n.Ino, n.Path), nil
	}
	id, err := namespaceID(n.Path)
	switch {
	case err != nil:
		return false, "", fmt.Errorf("cannot tell which namespace %s holds: %w", n.Path, err)
	case id != n.ID:
		return false, fmt.Sprintf("%s holds namespace %d, not %d, which reused inode %d (ours was deleted, the path reused)", n.Path, id, n.ID, n.Ino), nil
	}
	return true, fmt.Sprintf("namespace net:[%d] (id %d) is at %s", n.Ino, n.ID, n.Path), nil
}

// heldBy says what holds n's namespace, "" when nothing does. A holder of a
// namespace with the same inode but another ID holds a newer namespace.
func (p *Prober) heldBy(n ipam.Netns) (string, error) {
	p.once.Do(func() {
		proc := p.Proc
		if proc == "" {
			proc = "/proc"
		}
		p.used, p.err = namespacesInUse(proc)
	})
	if p.err != nil {
		return "", p.err
	}
	for _, h := range p.used[nsID{n.Dev, n.Ino}] {
		if n.ID == 0 {
			return h.what, nil
		}
		id, err := namespaceID(h.path)
		switch {
		case err == nil && id != n.ID, skip(err):
			continue // a newer namespace, or a holder that went away
		case err != nil:
			return h.what + " (which namespace it is cannot be told: " + err.Error() + ")", nil
		}
		return h.what, nil
	}
	return "", nil
}

// Survey judges every reservation of s.
func Survey(s ipam.Store, p *Prober) ([]Verdict, error) {
	all, err := s.Inspect()
	out := make([]Verdict, len(all))
	for i, r := range all {
		out[i] = p.Judge(r)
	}
	return out, err
}

// Reclaim releases the reservations judged Gone and returns them; an error
// on one does not stop the others.
func Reclaim(s ipam.Store, vs []Verdict) ([]Verdict, error) {
	var done []Verdict
	var errs []error
	for _, v := range vs {
		if v.State != Gone {
			continue
		}
		if err := s.Release(v.Addr); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, v)
	}
	return done, errors.Join(errs...)
}
