// Package macvlan is the macvlan plugin: containers given a macvlan link on
// a node interface, their own MAC on its L2 segment, a drop-in replacement
// for the reference CNI macvlan plugin. The macvlan binary runs it.
//
// It must not import another plugin's package, pkg/netfilter, pkg/overlay or
// pkg/subnet: what it shares with bridge lives in pkg/containerif and
// pkg/link.
package macvlan

import (
	"context"
	"errors"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// New is the macvlan plugin. It keeps no state of its own: the link lives in
// the container and the addresses in IPAM. So DEL removes only those two,
// never looking at the master: it works after the container's namespace was
// deleted (which took the macvlan with it) and after the master disappeared
// or the default route moved; and GC has nothing but IPAM's reservations to
// collect.
func New() cniplugin.Plugin {
	return containerif.New(containerif.Parts[*NetConf]{Load: loadConf, Add: add, Check: check, Status: status})
}

// add is macvlan's part of ADD: it creates the macvlan in the container,
// runs IPAM and applies its result there. The link comes first because the kernel's refusals (name
// taken, passthru slot occupied, master busy) are cheaper to meet before an
// IPAM process has reserved anything. Each step registers its undo right
// after it succeeds, so a failed ADD leaves neither link nor reservation.
func add(ctx context.Context, t *containerif.Attach, c *NetConf) (*current.Result, error) {
	master, err := createLink(t, c)
	if err != nil {
		return nil, err
	}
	ipam, err := t.IPAM(ctx, c.IPAM.Type, 0, nil) // all addresses on the macvlan
	if err != nil {
		return nil, err
	}
	res, err := t.Finish(ipam, c.DNS, c.ifOptions())
	if err != nil {
		return nil, err
	}
	t.Args.Logger().Info("attached", "master", master, "mode", link.MacvlanModeName(c.mode), "ips", len(res.IPs))
	return res, nil
}

// createLink resolves the master and creates the macvlan, down, in the
// container. It returns the master's name.
func createLink(t *containerif.Attach, c *NetConf) (string, error) {
	a := t.Args
	master, err := c.resolveMaster(t.Netns)
	if err != nil {
		return "", err
	}
	if c.mac != nil && c.mode == netlink.MACVLAN_MODE_PASSTHRU {
		// Setting it would change the master's own MAC; the reference ignores it too.
		a.Logger().Warn("a passthru macvlan takes the master's MAC; the requested MAC is ignored", "mac", c.mac.String())
	}
	o := link.MacvlanOptions{Name: a.IfName, Master: master, Mode: c.mode, MTU: c.MTU, MAC: c.mac, BCQueueLen: c.BCQueueLen, Netns: t.Netns}
	if c.LinkContNs {
		o.Netns = nil // master and link share the container's namespace
		err = netns.DoFile(t.Netns, func() error { return link.CreateMacvlan(o) })
	} else {
		err = link.CreateMacvlan(o)
	}
	if err != nil {
		return "", createError(err, a)
	}
	t.Created("macvlan")
	return master.Attrs().Name, nil
}

// createError gives each refusal of the kernel its CNI code.
func createError(err error, a *cniplugin.Args) error {
	switch {
	case errors.Is(err, link.ErrNameTaken):
		return netconf.Errorf(netconf.CodeInvalidEnv, "container %s already has an interface %q; pass another CNI_IFNAME or remove that interface: %w", a.Netns, a.IfName, err)
	case errors.Is(err, link.ErrPassthruBusy):
		// The slot frees up when the other attachment is deleted.
		return netconf.Errorf(netconf.CodeTryAgainLater, "creating macvlan %q: %w", a.IfName, err)
	case errors.Is(err, link.ErrNotEthernet), errors.Is(err, link.ErrMTUTooLarge), errors.Is(err, link.ErrMasterInUse):
		return netconf.Errorf(netconf.CodeInvalidConfig, "creating macvlan %q: %w", a.IfName, err)
	}
	return fmt.Errorf("creating macvlan %q in %s: %w", a.IfName, a.Netns, err)
}
