package subnet

import (
	"context"
	"errors"
)

// ErrNotAssigned marks a node that has no subnet yet and none it may take
// itself: in the Kubernetes API mode, a Node without a pod CIDR. It is a
// state to wait in, not a failure: Acquire succeeds once one is assigned.
// flanneld's message for it, which operators search for, is
// `node "X" pod cidr not assigned`.
var ErrNotAssigned = errors.New("pod cidr not assigned")

// Source is where this node's lease and the other nodes' leases come from:
// a Registry such as etcd, through a Manager, or the Kubernetes API's Node
// objects. subnetd chooses one at start and knows only this interface; both
// present every node's lease as an Entry whose Value is flannel's lease JSON
// (Attrs), so that one peer filter and one overlay serve either.
type Source interface {
	// Network is the cluster's network config.
	Network() Config
	// Acquire takes this node's lease, or finds the one it holds.
	Acquire(ctx context.Context) (Lease, error)
	// Check confirms that l is still this node's and renews it when due;
	// ErrLeaseLost when it is not this node's any more.
	Check(ctx context.Context, l Lease) (Lease, error)
	// Owns reports whether e is the entry of l, as this node wrote it.
	Owns(l Lease, e Entry) bool
	// Watch calls fn with every node's entry after each change, from a
	// first full view on, until ctx ends; it never returns early.
	Watch(ctx context.Context, fn func([]Entry))
	// Release gives l up.
	Release(ctx context.Context, l Lease) error
}

var _ Source = (*Manager)(nil)

// Network is the config the Manager leases from.
func (m *Manager) Network() Config { return m.Config }
