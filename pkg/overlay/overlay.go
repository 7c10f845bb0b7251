// Package overlay is one node's data plane of the pod network: the backends
// that carry pod traffic between nodes, behind one interface (Backend) that
// New chooses once from the network config's "Backend" object (Settings).
// Both program the node the way flanneld does, so that nodes running either
// reach each other's pods:
//
//   - vxlan (vxlan.go, device.go): a device "flannel.<VNI>" (or
//     "flannel-v6.<VNI>") per family carrying the address <own subnet>.0/32,
//     and per remote node a route "<subnet> via <subnet>.0 dev flannel.1
//     onlink", a permanent neighbour "<subnet>.0 → VTEP MAC" and an FDB entry
//     "VTEP MAC → public IP";
//   - host-gw (hostgw.go): a route per remote node's subnet via its public IP
//     on the underlay, no device, no encapsulation.
//
// Both share one engine. Peers are reconciled by diff (plan.go, reconcile.go,
// book.go): the kernel's tables are dumped once per Reconcile and only the
// difference is written, adds before deletes, in batches over one netlink
// socket (kernel.go, batch.go, nexthop.go), so a reconcile with nothing new
// costs no netlink write at all. Host says which peers would take the node's
// own addresses or routes over; Cleanup removes what any backend (or
// flanneld) left; Settings.Audit reports a backend's drift without writing
// (cnictl doctor), each backend kind reading what it programs.
//
// The overlay knows peers, never leases: it must not import pkg/subnet (the
// lease store and its JSON). The daemon turns leases into peers
// (subnet.LeasePeers) and decodes and encodes the leases' backend data.
//
// Every function acts on the network namespace of the calling thread, like
// pkg/link; callers switch namespaces with pkg/netns.
package overlay

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/cnisuite/cni/pkg/family"
)

// RouteProtocol marks the routes this package adds ("proto 83" in ip route),
// so that reconciles and --cleanup find exactly ours among the routes on a
// shared underlay interface and never touch an operator's.
const RouteProtocol = 83

// ByFamily holds one value per address family, indexed by family.Family.
type ByFamily[T any] [2]T

// Peer is one remote node of one address family: what a backend needs to
// send it pod traffic.
type Peer struct {
	Subnet   netip.Prefix     // the node's pod subnet
	PublicIP netip.Addr       // the node's underlay address, the vxlan endpoint
	VtepMAC  net.HardwareAddr // the MAC of the node's vxlan device (unused by host-gw)
}

func (p Peer) String() string {
	return fmt.Sprintf("%s (public IP %s, VTEP MAC %s)", p.Subnet, p.PublicIP, p.VtepMAC)
}

// Backend is the data plane of this node for one network. Calls must be
// serialized by the caller, each in the node's network namespace.
type Backend interface {
	// Ensure sets the node up for its own subnets (own[f] invalid: the
	// family is not in use) and returns the MTU pods must use; with an
	// error, a non-zero MTU is still the right one. It is called at start,
	// on a lease change and periodically; a node already right costs no
	// write.
	Ensure(own ByFamily[netip.Prefix]) (mtu int, err error)
	// Reconcile programs the peers of each family and removes the entries
	// of peers no longer listed, by diff against the kernel's tables.
	Reconcile(peers ByFamily[[]Peer]) (Stats, error)
	// Update does what Reconcile does, diffing against what the last
	// Reconcile or Update wrote instead of reading the kernel when the
	// backend keeps such a record: the path of a lease event.
	Update(peers ByFamily[[]Peer]) (Stats, error)
	// VtepMAC is the MAC of this node's device of family f, which its
	// lease publishes so that peers reach it; nil for a backend without
	// one (host-gw).
	VtepMAC(f family.Family) net.HardwareAddr
	// Devices names the links Ensure makes (none for host-gw): the ones
	// to watch for changes and to check.
	Devices() []string
	// Teardown removes what Ensure and Reconcile made (see Cleanup).
	Teardown() error
}

// Settings is the network config's "Backend" object, the same on every node.
// Keys no backend here knows (GBP, Learning, ...) are ignored, as flanneld's
// vxlan backend ignores those of others.
type Settings struct {
	Type          string `json:"Type"`
	VNI           int    `json:"VNI,omitempty"`
	Port          int    `json:"Port,omitempty"`
	MTU           int    `json:"MTU,omitempty"`
	DirectRouting bool   `json:"DirectRouting,omitempty"`
}

// Backend types. flanneld defaults to "udp", which neither implements any
// more; an empty type means vxlan, the one everyone configures.
const (
	TypeVXLAN  = "vxlan"
	TypeHostGW = "host-gw"
)

// Node is what a backend needs to know of this node, found at start.
type Node struct {
	Underlay string // the interface that carries the overlay
	MTU      int    // the underlay's MTU
	// Public is this node's public address per family, the vxlan devices'
	// source; an invalid one means the underlay's first global address.
	Public ByFamily[netip.Addr]
	// ID is the node's stable identity: the VTEP MACs derive from it, so
	// that they stay the same across restarts and the peers' entries stay
	// valid.
	ID  string
	Log *slog.Logger // nil means slog.Default()
}

// kind is one backend type: its settings' checks and defaults, its
// constructor, what its audit reads (Settings.Audit), and whether its peers
// publish a VTEP MAC, the MAC of a vxlan device of theirs.
type kind struct {
	check func(Settings) (Settings, error)
	build func(Settings, Node) Backend
	// audit finds, read only, what a Reconcile of one family computes its
	// entries against, and names it for reports (also along an error).
	audit func(*kernel, Settings, AuditConfig) (string, target, error)
	vtep  bool
}

// kinds holds every backend type there is; kindOf is the one place a type
// is looked up, and the one place an unknown type is an error.
var kinds = map[string]kind{
	TypeVXLAN:  {check: checkVXLAN, build: newVXLAN, audit: auditVXLAN, vtep: true},
	TypeHostGW: {check: func(s Settings) (Settings, error) { return s, nil }, build: newHostGW, audit: auditHostGW},
}

func kindOf(typ string) (kind, error) {
	k, ok := kinds[typ]
	if !ok {
		return kind{}, fmt.Errorf("Backend.Type %q is not supported; use %q or %q", typ, TypeVXLAN, TypeHostGW)
	}
	return k, nil
}

// WithDefaults validates s and fills in flannel's defaults: type vxlan,
// and for vxlan VNI 1 on port 8472.
func (s Settings) WithDefaults() (Settings, error) {
	if s.Type == "" {
		s.Type = TypeVXLAN
	}
	k, err := kindOf(s.Type)
	if err != nil {
		return s, err
	}
	return k.check(s)
}

// UsesVTEP reports whether the backend reaches peers through their VTEP,
// whose MAC (and VNI) their leases publish: true for vxlan, whose device
// per family is DefaultName's.
func (s Settings) UsesVTEP() bool { return kinds[s.Type].vtep }

// String names the backend as reports do: its type, with the VNI and UDP
// port of a backend that uses VTEPs ("vxlan VNI 1 port 8472").
func (s Settings) String() string {
	if s.UsesVTEP() {
		return fmt.Sprintf("%s VNI %d port %d", s.Type, s.VNI, s.Port)
	}
	return s.Type
}

// New returns the backend s names (defaults filled in) for this node. It
// touches no kernel state: Ensure does.
func New(s Settings, n Node) (Backend, error) {
	s, err := s.WithDefaults()
	if err != nil {
		return nil, err
	}
	if n.Log == nil {
		n.Log = slog.Default()
	}
	return kinds[s.Type].build(s, n), nil
}

// podMTU is the MTU of a network with no encapsulation: the config's,
// else the underlay's. A backend that adds headers lowers it.
func podMTU(s Settings, n Node) int {
	if s.MTU > 0 {
		return s.MTU
	}
	return n.MTU
}

// teardown removes every backend's devices and routes (Cleanup).
func teardown() error {
	if err := Cleanup(); err != nil {
		return fmt.Errorf("removing the data plane: %w", err)
	}
	return nil
}
