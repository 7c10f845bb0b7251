// Package stale tells reservations whose owner is provably gone from those
// whose owner might be alive. A reservation records the namespace its
// attachment was added in: the CNI_NETNS path, the namespace's device, inode
// and kernel ID (Linux 6.18+), and the nsid the node's namespace gave it.
//
// Only the nsid proves a namespace freed. A path proves nothing: a namespace
// outlives its path while anything holds it (a bind mount in another mount
// namespace, a task, an open file, a socket of a process that left it), and
// not all of those can be found from here. The kernel assigns each
// namespace at most one nsid per peer namespace and takes it back only when
// the namespace is freed (nothing at all holds it), then hands the number to
// the next namespace. So the attachment's namespace is gone when its nsid is
// free, or when the namespace now holding that nsid is provably another one.
// Anything else is Unknown, and only Gone is ever reclaimed.
//
// Of the suite it imports only pkg/ipam and pkg/netns; never pkg/ipam/disk or
// a plugin.
package stale

import (
	"errors"
	"fmt"

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

// Identify describes the namespace at path as ADD records it, giving it an
// nsid in the calling thread's namespace (the node's) when it has none. The
// identity is left zero unless path is a namespace (nsfs): a plain file or a
// missing path proves nothing later.
func Identify(path string) ipam.Netns {
	n := ipam.Netns{Path: path}
	if path == "" {
		return n
	}
	f, err := openNamespace(path)
	if err != nil {
		return n
	}
	defer f.Close()
	id, ok := identifyFile(f)
	if !ok {
		return n
	}
	n.Dev, n.Ino, n.ID = id.dev, id.ino, id.id
	n.NSID, n.NodeIno, n.NodeID, _ = assignNSID(f) // NodeIno stays zero on failure: no proof later
	return n
}

// Prober judges reservations. It reads the node's nsids and what holds
// each once, on the first reservation that needs them, so one Prober serves
// one decision (one verb).
type Prober struct {
	owners map[int32]holder // the namespaces visible here, by nsid; nil until needed
	err    error
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
// then asks the nsid whether the namespace was freed.
func (p *Prober) netnsState(n ipam.Netns) (State, string) {
	here, reason, err := atPath(n)
	if err != nil {
		return Unknown, err.Error()
	}
	if here {
		return Alive, reason
	}
	if n.NodeIno == 0 {
		return Unknown, reason + ", but no nsid was recorded at ADD (an older version's entry), so nothing proves net:[" + fmt.Sprint(n.Ino) + "] freed"
	}
	freed, why, err := p.freed(n)
	switch {
	case err != nil:
		return Unknown, fmt.Sprintf("%s, but whether net:[%d] was freed cannot be told: %v", reason, n.Ino, err)
	case !freed:
		return Unknown, reason + ", but " + why
	}
	return Gone, reason + "; " + why
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
