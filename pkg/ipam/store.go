package ipam

import "net/netip"

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

// Reservation is one reserved address. Corrupt is set, and Owner is zero, when
// the record exists but cannot be read as an owner (empty, garbage): such a
// record still blocks its address until GC reclaims it.
type Reservation struct {
	Addr    netip.Addr
	Owner   Owner
	Corrupt error
}

// Store keeps reservations for one network. Callers hold whatever lock the
// implementation needs for the whole verb; methods do not lock.
//
// Queries by owner are methods (not built on All) so that an implementation
// can answer them from an index instead of reading every record.
type Store interface {
	// Reserve records addr for owner unless it is already reserved, and notes
	// it as the last address handed out from range set `set`. It reports
	// false when addr was taken; on false or an error nothing has changed.
	Reserve(addr netip.Addr, owner Owner, set int) (bool, error)
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
}
