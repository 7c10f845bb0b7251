package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/vxlan"
)

// peerSet is every remote node, split by family as the devices are.
type peerSet struct {
	v4, v6 []vxlan.Peer
}

func (p peerSet) len() int { return len(p.v4) + len(p.v6) }

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
	Reconcile(peers peerSet) (vxlan.Stats, error)
	// Update does what Reconcile does, diffing against what the last
	// Reconcile or Update wrote instead of reading the kernel: the path of
	// a lease event.
	Update(peers peerSet) (vxlan.Stats, error)
	// Changes signals, until ctx ends, when someone deletes or changes a
	// device Ensure made (link or address), so that the daemon repairs it
	// at once instead of at the next periodic check.
	Changes(ctx context.Context) (<-chan struct{}, error)
	// Host reads what of the node peers must not take over: its addresses
	// and the routes that are not the overlay's (vxlan.ReadHost).
	Host() (vxlan.Host, error)
	// Teardown removes what Ensure and Reconcile made.
	Teardown() error
}

// overlay is the real data plane: pkg/vxlan's devices or host-gw routes.
type overlay struct {
	backend    subnet.Backend
	ul         underlay
	mac4, mac6 net.HardwareAddr
	log        *slog.Logger
	dev4, dev6 *vxlan.Device
	own        subnet.Subnets
}

func newOverlay(b subnet.Backend, ul underlay, id string, log *slog.Logger) *overlay {
	return &overlay{backend: b, ul: ul, log: log, mac4: vxlan.MACFromID(id + "/ipv4"), mac6: vxlan.MACFromID(id + "/ipv6")}
}

// devices are the names Ensure gives this backend's devices.
func (o *overlay) devices() []string {
	if o.backend.Type != subnet.BackendVXLAN {
		return nil
	}
	return []string{vxlan.DefaultName(o.backend.VNI, false), vxlan.DefaultName(o.backend.VNI, true)}
}

// backendData is what this node publishes in its lease for each family.
func (o *overlay) backendData() (v4, v6 json.RawMessage) {
	if o.backend.Type != subnet.BackendVXLAN {
		return nil, nil
	}
	v4, _ = json.Marshal(subnet.VXLANData{VNI: o.backend.VNI, VtepMAC: o.mac4.String()})
	v6, _ = json.Marshal(subnet.VXLANData{VNI: o.backend.VNI, VtepMAC: o.mac6.String()})
	return v4, v6
}

func (o *overlay) Ensure(own subnet.Subnets) (int, error) {
	o.own = own
	mtu := o.ul.mtu
	if o.backend.MTU > 0 {
		mtu = o.backend.MTU
	}
	if o.backend.Type != subnet.BackendVXLAN {
		return mtu, nil
	}
	var errs []error
	for _, f := range []struct {
		subnet netip.Prefix
		local  netip.Addr
		mac    net.HardwareAddr
		dev    **vxlan.Device
	}{{own.V4, o.ul.publicV4, o.mac4, &o.dev4}, {own.V6, o.ul.publicV6, o.mac6, &o.dev6}} {
		if !f.subnet.IsValid() {
			continue
		}
		dev, err := vxlan.Ensure(vxlan.Config{VNI: o.backend.VNI, Port: o.backend.Port, Underlay: o.ul.name, LocalIP: f.local,
			Subnet: f.subnet, MAC: f.mac, MTU: o.backend.MTU, DirectRouting: o.backend.DirectRouting, Log: o.log})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if dev.Created() {
			o.log.Warn("vxlan device created (missing or changed); replaying its peers", "device", dev.Name())
		}
		if *f.dev != nil {
			(*f.dev).Close()
		}
		*f.dev = dev
		mtu = min(mtu, dev.Config().MTU)
	}
	return mtu, errors.Join(errs...)
}

func (o *overlay) Reconcile(p peerSet) (vxlan.Stats, error) {
	return o.program(p, (*vxlan.Device).Reconcile)
}

func (o *overlay) Update(p peerSet) (vxlan.Stats, error) {
	return o.program(p, (*vxlan.Device).Update)
}

// program runs fn on each family's device; host-gw has no devices and
// always reconciles.
func (o *overlay) program(p peerSet, fn func(*vxlan.Device, []vxlan.Peer) (vxlan.Stats, error)) (vxlan.Stats, error) {
	var total vxlan.Stats
	var errs []error
	add := func(s vxlan.Stats, err error) {
		total.Peers += s.Peers
		total.Direct += s.Direct
		total.Skipped += s.Skipped
		total.Added += s.Added
		total.Deleted += s.Deleted
		if err != nil {
			errs = append(errs, err)
		}
	}
	if o.backend.Type == subnet.BackendHostGW {
		if o.own.V4.IsValid() {
			add(vxlan.HostGW{Underlay: o.ul.name, Subnet: o.own.V4, Log: o.log}.Reconcile(p.v4))
		}
		if o.own.V6.IsValid() {
			add(vxlan.HostGW{Underlay: o.ul.name, Subnet: o.own.V6, Log: o.log}.Reconcile(p.v6))
		}
		return total, errors.Join(errs...)
	}
	if o.dev4 != nil {
		add(fn(o.dev4, p.v4))
	}
	if o.dev6 != nil {
		add(fn(o.dev6, p.v6))
	}
	return total, errors.Join(errs...)
}

func (o *overlay) Host() (vxlan.Host, error) { return vxlan.ReadHost() }

func (o *overlay) Teardown() error {
	if err := vxlan.Cleanup(); err != nil {
		return fmt.Errorf("removing the data plane: %w", err)
	}
	return nil
}
