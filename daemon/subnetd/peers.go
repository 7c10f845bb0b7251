package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/vxlan"
)

// peerFilter turns lease entries into peers, skipping (with one log line per
// key and revision) those that cannot be programmed.
type peerFilter struct {
	backend subnet.Backend
	log     *slog.Logger
	logged  map[subnet.Subnets]int64 // revision last logged as skipped
}

func (f *peerFilter) peers(entries []subnet.Entry, own subnet.Subnets) peerSet {
	var out peerSet
	seen := map[subnet.Subnets]int64{}
	for _, e := range entries {
		if e.Subnets == own {
			continue
		}
		v4, v6, err := f.peer(e)
		if err != nil {
			seen[e.Subnets] = e.Rev
			if f.logged[e.Subnets] != e.Rev {
				f.log.Warn("skipping a lease that cannot be programmed", "key", e.Subnets.Key(), "error", err)
			}
			continue
		}
		if v4 != nil {
			out.v4 = append(out.v4, *v4)
		}
		if v6 != nil {
			out.v6 = append(out.v6, *v6)
		}
	}
	f.logged = seen
	return out
}

// peer reads one lease: same backend, same VNI, a usable public address.
func (f *peerFilter) peer(e subnet.Entry) (v4, v6 *vxlan.Peer, err error) {
	var a subnet.Attrs
	if err := json.Unmarshal(e.Value, &a); err != nil {
		return nil, nil, fmt.Errorf("bad lease JSON: %w", err)
	}
	if a.BackendType != f.backend.Type {
		return nil, nil, fmt.Errorf("backend %q, this network uses %q", a.BackendType, f.backend.Type)
	}
	if e.Subnets.V4.IsValid() && a.PublicIP.IsValid() && !a.PublicIP.IsUnspecified() {
		mac, err := f.mac(a.BackendData)
		if err != nil {
			return nil, nil, err
		}
		v4 = &vxlan.Peer{Subnet: e.Subnets.V4, PublicIP: a.PublicIP, VtepMAC: mac}
	}
	if e.Subnets.V6.IsValid() && a.PublicIPv6.IsValid() {
		mac, err := f.mac(a.BackendV6Data)
		if err != nil {
			return nil, nil, fmt.Errorf("IPv6: %w", err)
		}
		v6 = &vxlan.Peer{Subnet: e.Subnets.V6, PublicIP: a.PublicIPv6, VtepMAC: mac}
	}
	if v4 == nil && v6 == nil {
		return nil, nil, fmt.Errorf("no public address for its subnets (PublicIP %s, PublicIPv6 %s)", a.PublicIP, a.PublicIPv6)
	}
	return v4, v6, nil
}

// mac reads the VTEP MAC of vxlan backend data; host-gw needs none.
func (f *peerFilter) mac(data json.RawMessage) (net.HardwareAddr, error) {
	if f.backend.Type != subnet.BackendVXLAN {
		return nil, nil
	}
	var d subnet.VXLANData
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("bad vxlan BackendData: %w", err)
	}
	if d.VNI != 0 && d.VNI != f.backend.VNI {
		return nil, fmt.Errorf("VNI %d, this network uses %d", d.VNI, f.backend.VNI)
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("VtepMAC %q is not an Ethernet address", d.VtepMAC)
	}
	return mac, nil
}
