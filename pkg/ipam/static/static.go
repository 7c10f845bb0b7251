// Package static is the static IPAM plugin: it returns the addresses, routes and DNS of its
// configuration, or the addresses a runtime asks for (runtimeConfig.ips, args.cni.ips, CNI_ARGS
// IP and GATEWAY), and keeps no state, so DEL and GC have nothing to release. The static binary
// runs it, and bridge, macvlan and flannel link it in to run IPAM of type static without an exec.
//
// It must not import another plugin's package or pkg/link: it hands out addresses and never
// configures a link.
package static

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/ipam"
)

// Plugin is static's verbs.
type Plugin struct{}

// Add returns the configured addresses with their gateways, the routes and the DNS.
func (Plugin) Add(_ context.Context, a *cniplugin.Args) (types.Result, error) {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: c.routes, DNS: c.IPAM.DNS}
	for _, addr := range c.addrs {
		res.IPs = append(res.IPs, &current.IPConfig{Address: ipam.IPNet(addr.prefix), Gateway: ipam.IP(addr.gw)})
	}
	return res, nil
}

// Check verifies that every configured address is in the prevResult, with
// its gateway when one is configured.
func (Plugin) Check(_ context.Context, a *cniplugin.Args) error {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	prev, err := c.CheckPrevResult()
	if err != nil {
		return err
	}
	for _, addr := range c.addrs {
		i := slices.IndexFunc(prev.IPs, func(ipc *current.IPConfig) bool {
			ip, _ := netip.AddrFromSlice(ipc.Address.IP)
			return ip.Unmap() == addr.prefix.Addr()
		})
		if i < 0 {
			return fmt.Errorf("static: address %s is configured but not in the prevResult of %s; run ADD again", addr.prefix, a.IfName)
		}
		gw, _ := netip.AddrFromSlice(prev.IPs[i].Gateway)
		if addr.gw.IsValid() && gw.Unmap() != addr.gw {
			return fmt.Errorf("static: address %s has gateway %s in the prevResult, %s configured; run ADD again", addr.prefix, prev.IPs[i].Gateway, addr.gw)
		}
	}
	return nil
}

// Del releases nothing: static keeps no state. The configuration is still
// checked, so a broken one is reported rather than ignored.
func (Plugin) Del(_ context.Context, a *cniplugin.Args) error {
	_, err := load(a.StdinData, a.Args)
	return err
}

// GC has nothing to collect.
func (p Plugin) GC(ctx context.Context, a *cniplugin.Args) error { return p.Del(ctx, a) }

// Status is ready whenever the configuration is valid.
func (p Plugin) Status(ctx context.Context, a *cniplugin.Args) error { return p.Del(ctx, a) }
