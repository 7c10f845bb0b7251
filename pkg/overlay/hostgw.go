package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/cnisuite/cni/pkg/family"
)

// HostGW is flannel's host-gw backend for one address family: every peer
// subnet is routed via the peer's public IP on the underlay, with no device
// and no encapsulation. It needs all nodes on one link; peers whose public IP
// is not on the underlay's link are logged and skipped. The node must forward
// IP packets (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding).
type HostGW struct {
	Underlay string       // the interface that reaches the other nodes
	Subnet   netip.Prefix // this node's subnet; its family is the backend's
	Log      *slog.Logger // nil means slog.Default()
}

// Reconcile routes peers (this family) and removes the routes of peers no
// longer listed, by diff against the main table like Device.Reconcile: no
// write when nothing changed.
func (g HostGW) Reconcile(peers []Peer) (Stats, error) {
	if g.Underlay == "" || !g.Subnet.IsValid() {
		return Stats{}, errors.New("host-gw: the underlay interface and this node's subnet are required")
	}
	log := g.Log
	if log == nil {
		log = slog.Default()
	}
	f := family.OfPrefix(g.Subnet)
	k, err := openKernel(f)
	if err != nil {
		return Stats{}, err
	}
	defer k.close()
	t, err := hostGWTarget(k, f, g.Subnet, g.Underlay)
	if err != nil {
		return Stats{}, err
	}
	s, _, err := reconcile(k, t, peers, "host-gw", log)
	return s, err
}

// hostGWTarget is what host-gw computes the routes of family f against:
// this node's subnet own (invalid when unknown), and the underlay's
// addresses of f, on whose links every peer's public IP must be and none
// of which a peer's may be.
func hostGWTarget(k *kernel, f family.Family, own netip.Prefix, underlay string) (target, error) {
	t := target{family: f, own: own.Masked(), hostGW: true}
	var err error
	if t.underlay, t.direct, err = onLinkPrefixes(k, underlay); err != nil {
		return t, fmt.Errorf("host-gw: %w", err)
	}
	for _, p := range t.direct {
		t.self = append(t.self, p.Addr())
	}
	return t, nil
}

// hostGWBackend is the host-gw Backend: a HostGW per family in use.
type hostGWBackend struct {
	s    Settings
	node Node
	own  ByFamily[netip.Prefix]
}

func newHostGW(s Settings, n Node) Backend { return &hostGWBackend{s: s, node: n} }

// Ensure only records the node's subnets: host-gw makes no device.
func (b *hostGWBackend) Ensure(own ByFamily[netip.Prefix]) (int, error) {
	b.own = own
	return podMTU(b.s, b.node), nil
}

func (b *hostGWBackend) Reconcile(peers ByFamily[[]Peer]) (Stats, error) {
	var total Stats
	var errs []error
	for f, sn := range b.own {
		if sn.IsValid() {
			s, err := HostGW{Underlay: b.node.Underlay, Subnet: sn, Log: b.node.Log}.Reconcile(peers[f])
			total = total.plus(s)
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

// Update is Reconcile: host-gw keeps no record of what it wrote.
func (b *hostGWBackend) Update(peers ByFamily[[]Peer]) (Stats, error) { return b.Reconcile(peers) }

func (b *hostGWBackend) VtepMAC(family.Family) net.HardwareAddr { return nil }

func (b *hostGWBackend) Devices() []string { return nil }

func (b *hostGWBackend) Teardown() error { return teardown() }
