package subnetd

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/subnet"
)

// peerSet is every remote node, split by family as the backends program
// them.
type peerSet = overlay.ByFamily[[]overlay.Peer]

// dataPlane programs this node for its lease and its peers' leases. The
// daemon talks to it only through this interface, so that its loop is tested
// with a fake and without root.
type dataPlane interface {
	// Ensure sets the node up for its own subnets (a device per family) and
	// returns the MTU pods must use. It is called at start, on a lease
	// change and periodically; a node already right costs no write.
	Ensure(own subnet.Subnets) (mtu int, err error)
	// Reconcile programs the peers and removes entries of vanished ones,
	// by diff against the kernel's tables.
	Reconcile(peers peerSet) (overlay.Stats, error)
	// Update does what Reconcile does, diffing against what the last
	// Reconcile or Update wrote instead of reading the kernel: the path of
	// a lease event.
	Update(peers peerSet) (overlay.Stats, error)
	// Changes signals, until ctx ends, when someone deletes or changes a
	// device Ensure made (link or address), so that the daemon repairs it
	// at once instead of at the next periodic check.
	Changes(ctx context.Context) (<-chan struct{}, error)
	// Host reads what of the node peers must not take over: its addresses
	// and the routes that are not the overlay's (overlay.ReadHost).
	Host() (overlay.Host, error)
	// Teardown removes what Ensure and Reconcile made.
	Teardown() error
}

// plane is the real data plane: the network's overlay backend, with what
// the daemon adds around it (following its devices' changes, reading the
// node).
type plane struct {
	overlay.Backend
	log *slog.Logger
}

// newPlane chooses the backend the network config names, for this node.
func newPlane(b overlay.Settings, ul underlay, id string, log *slog.Logger) (plane, error) {
	be, err := overlay.New(b, overlay.Node{Underlay: ul.name, MTU: ul.mtu, Public: overlay.ByFamily[netip.Addr](ul.public),
		ID: id, Log: log})
	return plane{Backend: be, log: log}, err
}

func (p plane) Ensure(own subnet.Subnets) (int, error) {
	return p.Backend.Ensure(overlay.ByFamily[netip.Prefix]{own.V4, own.V6})
}

func (p plane) Host() (overlay.Host, error) { return overlay.ReadHost() }
