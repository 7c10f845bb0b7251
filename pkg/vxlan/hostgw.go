package vxlan

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
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
	v6 := g.Subnet.Addr().Is6()
	k, err := openKernel(v6)
	if err != nil {
		return Stats{}, err
	}
	defer k.close()
	t := target{v6: v6, own: g.Subnet.Masked(), hostGW: true}
	if t.underlay, t.direct, err = onLinkPrefixes(k, g.Underlay); err != nil {
		return Stats{}, fmt.Errorf("host-gw: %w", err)
	}
	for _, p := range t.direct {
		t.self = append(t.self, p.Addr())
	}
	s, _, err := reconcile(k, t, peers, "host-gw", log)
	return s, err
}
