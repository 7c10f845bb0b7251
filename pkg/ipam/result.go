package ipam

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/netconf"
)

// RouteConfig is a route as an IPAM plugin's configuration writes it
// (host-local's and static's "routes"); the keys past gw are passed through
// to the result as the reference passes them.
type RouteConfig struct {
	Dst      string `json:"dst"`
	GW       string `json:"gw,omitempty"`
	MTU      int    `json:"mtu,omitempty"`
	AdvMSS   int    `json:"advmss,omitempty"`
	Priority int    `json:"priority,omitempty"`
	Table    *int   `json:"table,omitempty"`
	Scope    *int   `json:"scope,omitempty"`
}

// Routes validates configured routes (key names the list in messages, e.g.
// "routes") and returns them as a result carries them: dst with its host
// bits kept, as the reference keeps them, and a gateway of dst's family.
func Routes(key string, rcs []RouteConfig) ([]*types.Route, error) {
	out := make([]*types.Route, 0, len(rcs))
	for i, rc := range rcs {
		dst, err := netip.ParsePrefix(strings.TrimSpace(rc.Dst))
		if err != nil || dst.Addr().Zone() != "" || dst.Addr().Is4In6() {
			return nil, netconf.Invalid("%s[%d].dst %q is not a CIDR; write e.g. 0.0.0.0/0 or ::/0", key, i, rc.Dst)
		}
		var gw netip.Addr
		if strings.TrimSpace(rc.GW) != "" {
			if gw, err = ParseAddr(fmt.Sprintf("%s[%d].gw", key, i), rc.GW); err != nil {
				return nil, err
			}
			if gw.BitLen() != dst.Addr().BitLen() {
				return nil, netconf.Invalid("%s[%d]: gw %s and dst %s are of different IP families; use a gateway of the destination's family", key, i, gw, dst)
			}
		}
		out = append(out, &types.Route{Dst: IPNet(dst), GW: IP(gw), MTU: rc.MTU, AdvMSS: rc.AdvMSS,
			Priority: rc.Priority, Table: rc.Table, Scope: rc.Scope})
	}
	return out, nil
}

// IPNet is p as a result's address: the address with its prefix length,
// host bits kept.
func IPNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// IP is a as a result's gateway: nil when a is the zero Addr (none).
func IP(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}
