package ipam

import (
	"errors"
	"net/netip"
	"time"
)

// Owner is the attachment an address is reserved for. IfName is empty in
// records written by old reference versions, which stored only the container
// ID; such a record belongs to every interface of that container.
type Owner struct {
	ContainerID string
	IfName      string
}

// Legacy reports a record that names no interface.
func (o Owner) Legacy() bool { return o.IfName == "" }

// Matches reports whether a reservation held by o belongs to attachment a.
func (o Owner) Matches(a Owner) bool {
	return o.ContainerID == a.ContainerID && (o.IfName == a.IfName || o.Legacy())
}

func (o Owner) String() string {
	if o.Legacy() {
		return "container " + o.ContainerID + " (any interface)"
	}
	return "container " + o.ContainerID + " interface " + o.IfName
}

// Netns is the network namespace an attachment was added in, as seen at ADD:
// the CNI_NETNS path and, when that path was a namespace, the namespace's
// device and inode, its ID where the kernel has one (NS_GET_ID, Linux 6.18+:
// unique for the boot, where inode numbers are reused), and its nsid in the
// node's namespace (the one the plugin ran in, told by NodeIno and NodeID).
// The path tells whether the namespace is still where it was; only the nsid
// can prove it freed (see pkg/ipam/stale).
type Netns struct {
	Path     string
	Dev, Ino uint64 // zero: the path could not be identified as a namespace
	ID       uint64 // zero: the kernel cannot tell
	NSID     int32  // meaningful only when NodeIno is set
	// NodeIno and NodeID identify the namespace NSID was assigned in; a zero
	// NodeIno means no nsid was recorded (an older version, or the kernel
	// refused one).
	NodeIno, NodeID uint64
}

// Identified reports whether n can prove anything: a path and an identity.
func (n Netns) Identified() bool { return n.Path != "" && n.Ino != 0 }

// Claim is what a reservation records: its owner, and where the owner lives.
type Claim struct {
	Owner
	Netns Netns
}

// ErrEmptyRecord is wrapped by Reservation.Corrupt for a record that holds
// nothing at all: its writer was stopped between creating and writing it (the
// reference plugin creates, then writes), so the ADD that made it failed and
// no attachment owns it.
var ErrEmptyRecord = errors.New("empty reservation record")

// Reservation is one reserved address. Corrupt is set, and Owner is zero, when
// the record exists but cannot be read as an owner (empty, garbage): such a
// record still blocks its address until GC reclaims it.
type Reservation struct {
	Addr    netip.Addr
	Owner   Owner
	Corrupt error
	// Netns is where the owner was added, when the store recorded it for this
	// very record (Inspect only); zero otherwise, e.g. for a record the
	// reference plugin wrote.
	Netns Netns
	Since time.Time // when the address was reserved; zero: unknown
}

// Store keeps reservations for one network. Callers hold whatever lock the
// implementation needs for the whole verb; methods do not lock.
//
// Queries by owner are methods (not built on All) so that an implementation
// can answer them from an index instead of reading every record.
type Store interface {
	// Reserve records addr for the claim's owner unless it is already
	// reserved, and notes it as the last address handed out from range set
	// `set`. It reports false when addr was taken; on false or an error
	// nothing has changed.
	Reserve(addr netip.Addr, c Claim, set int) (bool, error)
	// LastReserved is the address most recently reserved from set `set`, or
	// the zero Addr when there is none (or the note is unreadable: it is only
	// a hint for round-robin).
	LastReserved(set int) (netip.Addr, error)
	// Lookup returns the reservation of addr, if any.
	Lookup(addr netip.Addr) (Reservation, bool, error)
	// ByOwner lists the addresses reserved for the attachment (legacy records
	// of its container included).
	ByOwner(owner Owner) ([]netip.Addr, error)
	// ReleaseByOwner frees the attachment's addresses and returns them.
	// Records naming the interface are released; legacy records of the
	// container only when there is no such record, as the reference does.
	ReleaseByOwner(owner Owner) ([]netip.Addr, error)
	// Release frees one address; releasing a free address is not an error.
	Release(addr netip.Addr) error
	// All lists every reservation. Records that cannot be read are reported
	// in the joined error while the others are still returned.
	All() ([]Reservation, error)
	// Inspect is All with Netns and Since filled in where the store knows
	// them: what a decision to reclaim a reservation is based on.
	Inspect() ([]Reservation, error)
}
