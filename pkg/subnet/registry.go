package subnet

import (
	"context"
	"errors"
	"time"
)

// Errors a Registry returns; implementations wrap them.
var (
	ErrNotFound   = errors.New("not found")
	ErrConflict   = errors.New("changed by someone else") // a compare-and-swap lost
	ErrLeaseGone  = errors.New("store lease expired or revoked")
	ErrCompacted  = errors.New("watch revision compacted")
	ErrNoSubnets  = errors.New("no free subnet left in the network")
	ErrLeaseLost  = errors.New("lease lost")
	ErrWrongOwner = errors.New("lease belongs to another node")
)

// Entry is one key under <prefix>/subnets/ as the store holds it.
type Entry struct {
	Subnets Subnets
	Value   []byte // the JSON value; decoded by the Manager, which skips bad ones
	Rev     int64  // modification revision
	Lease   int64  // store lease the key is attached to; 0 for a reservation
}

// Record is a node identity's presence record as the store holds it.
type Record struct {
	Value []byte // the JSON of a Presence; decoded by the Manager
	Rev   int64  // modification revision
}

// Event is one change seen by a watch. A watch that fails sends an Event with
// Err set (ErrCompacted when the store forgot the revision asked for) and
// closes its channel; the caller lists again.
type Event struct {
	Entry   Entry
	Deleted bool
	Err     error
}

// Registry is the store of the network config and the leases. Every call that
// writes is a compare-and-swap; every call ends by its context's deadline.
type Registry interface {
	// Config returns the network config's raw JSON, or ErrNotFound.
	Config(ctx context.Context) ([]byte, error)
	// CreateConfig stores the network config if none is there, else ErrConflict.
	CreateConfig(ctx context.Context, data []byte) error
	// List returns every lease key and the store revision they were read at.
	List(ctx context.Context) ([]Entry, int64, error)
	// Get returns one lease key, or ErrNotFound.
	Get(ctx context.Context, s Subnets) (Entry, error)
	// Put writes value at s if the key's revision is still prevRev (0: the key
	// is absent), else ErrConflict. leased attaches the key to the registry's
	// one store lease, granted on first use; otherwise the key is a reservation.
	Put(ctx context.Context, s Subnets, value []byte, prevRev int64, leased bool) (Entry, error)
	// Delete removes s if its revision is still prevRev, else ErrConflict.
	Delete(ctx context.Context, s Subnets, prevRev int64) error
	// Adopt makes id, a store lease left by this node's previous run, the
	// registry's lease if it is still alive, so that no lease is orphaned.
	Adopt(ctx context.Context, id int64) error
	// KeepAlive renews the registry's store lease and returns its remaining
	// time to live; ErrLeaseGone when it has expired (the next leased Put
	// grants a new one).
	KeepAlive(ctx context.Context) (time.Duration, error)
	// Revoke ends the registry's store lease, deleting the keys attached to it.
	Revoke(ctx context.Context) error
	// Watch streams changes to lease keys from revision rev on.
	Watch(ctx context.Context, rev int64) <-chan Event

	// Presence returns node's presence record, or ErrNotFound. The records
	// live apart from the lease keys, where flanneld does not look.
	Presence(ctx context.Context, node string) (Record, error)
	// ClaimPresence writes value as node's presence record if its revision
	// is still prevRev (0: absent), else ErrConflict. The record hangs on a
	// store lease of PresenceTTL of its own, one per owner (the claiming
	// run's instance, so that a restart takes its previous run's over),
	// which the registry renews from then on, until ReleasePresence, its
	// close, or the lease's expiry.
	ClaimPresence(ctx context.Context, node, owner string, value []byte, prevRev int64) (Record, error)
	// ReleasePresence ends the presence lease, deleting the record.
	ReleasePresence(ctx context.Context) error
}
