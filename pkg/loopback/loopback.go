// Package loopback is the loopback plugin: it brings up the lo interface of
// a container's namespace. The loopback binary runs it.
//
// It must not import another plugin's package; it needs only pkg/cniplugin,
// pkg/netconf and pkg/netns.
package loopback

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// Plugin is loopback's verbs.
type Plugin struct{}

func load(a *cniplugin.Args) (*netconf.Base, error) {
	var c netconf.Base
	if err := netconf.Load(a.StdinData, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Add sets lo up and reports its addresses. Chained after another plugin it
// passes the prevResult through, as the reference does.
func (Plugin) Add(_ context.Context, a *cniplugin.Args) (types.Result, error) {
	c, err := load(a)
	if err != nil {
		return nil, err
	}
	var addrs []netlink.Addr
	err = netns.Do(a.Netns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("finding lo: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("setting lo up: %w", err)
		}
		addrs, err = netlink.AddrList(lo, netlink.FAMILY_ALL)
		return err
	})
	if err != nil {
		return nil, netns.CNIError(err, a.Netns)
	}
	if prev, err := c.PrevResult(); err != nil || prev != nil {
		return prev, err
	}
	return loResult(a.Netns, addrs), nil
}

func loResult(sandbox string, addrs []netlink.Addr) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{{Name: "lo", Mac: "00:00:00:00:00:00", Sandbox: sandbox}}}
	for _, ad := range addrs {
		if ad.IPNet == nil || !ad.IP.IsLoopback() {
			continue
		}
		res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(0), Address: *ad.IPNet})
	}
	return res
}

// Check verifies that lo is up.
func (Plugin) Check(_ context.Context, a *cniplugin.Args) error {
	if _, err := load(a); err != nil {
		return err
	}
	err := netns.Do(a.Netns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("lo in %s is down; run ADD again or 'ip link set lo up' in the namespace", a.Netns)
		}
		return nil
	})
	return netns.CNIError(err, a.Netns)
}

// Del sets lo down; a namespace that is already gone is success.
func (Plugin) Del(_ context.Context, a *cniplugin.Args) error {
	if _, err := load(a); err != nil {
		return err
	}
	if a.Netns == "" {
		return nil
	}
	err := netns.Do(a.Netns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return nil
		}
		return netlink.LinkSetDown(lo)
	})
	if errors.Is(err, netns.ErrGone) {
		return nil
	}
	return err
}

// GC: loopback keeps no state outside the container.
func (Plugin) GC(_ context.Context, a *cniplugin.Args) error { _, err := load(a); return err }

// Status: loopback is always able to serve ADD.
func (Plugin) Status(_ context.Context, a *cniplugin.Args) error { _, err := load(a); return err }
