// Package stale tells reservations whose owner is provably gone from those
// whose owner might be alive. A reservation records the namespace its
// attachment was added in (path, and the namespace's device and inode); the
// owner is gone when that path no longer holds that namespace and nothing on
// the node (a mount, a task, an open file) holds it any more. Whatever cannot
// be proved is Unknown, and only Gone is ever reclaimed.
package stale

import (
	"errors"
	"fmt"
	"sync"

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
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		return n
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return n
	}
	n.Dev, n.Ino = st.Dev, st.Ino
	return n
}

// Prober judges reservations. It looks at /proc once, on the first
// reservation that needs it, so one Prober serves one decision (one verb).
type Prober struct {
	Proc string // procfs mount; "/proc" when empty

	once sync.Once
	used map[nsID]string // namespaces something holds, and what
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

// netnsState compares the recorded namespace with what its path holds now.
func (p *Prober) netnsState(n ipam.Netns) (State, string) {
	var st unix.Stat_t
	err := unix.Stat(n.Path, &st)
	var reason string
	switch {
	case err == nil && st.Dev == n.Dev && st.Ino == n.Ino:
		return Alive, fmt.Sprintf("namespace net:[%d] is at %s", n.Ino, n.Path)
	case err == nil:
		reason = fmt.Sprintf("%s no longer holds namespace net:[%d] (deleted, the path reused)", n.Path, n.Ino)
	case errors.Is(err, unix.ENOENT):
		reason = fmt.Sprintf("%s is gone", n.Path)
	default:
		return Unknown, fmt.Sprintf("cannot look at %s: %v", n.Path, err)
	}
	where, err := p.heldBy(nsID{n.Dev, n.Ino})
	if err != nil {
		return Unknown, fmt.Sprintf("%s, but whether something still holds net:[%d] is unknown: %v", reason, n.Ino, err)
	}
	if where != "" {
		// The same inode may also be a new namespace that reused the
		// number: either way this one cannot be proved gone.
		return Unknown, fmt.Sprintf("%s, but net:[%d] is still held by %s", reason, n.Ino, where)
	}
	return Gone, reason
}

// heldBy says what holds the namespace, "" when nothing does.
func (p *Prober) heldBy(id nsID) (string, error) {
	p.once.Do(func() {
		proc := p.Proc
		if proc == "" {
			proc = "/proc"
		}
		p.used, p.err = namespacesInUse(proc)
	})
	return p.used[id], p.err
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
