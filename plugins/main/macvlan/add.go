package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// plugin is the macvlan plugin. It keeps no state of its own: the link
// lives in the container and the addresses in IPAM.
type plugin struct{}

// Add creates the macvlan in the container, runs IPAM and applies its
// result there. The link comes first because the kernel's refusals (name
// taken, passthru slot occupied, master busy) are cheaper to meet before an
// IPAM process has reserved anything. Each step registers its undo right
// after it succeeds, so a failed ADD leaves neither link nor reservation.
func (p *plugin) Add(ctx context.Context, a *cniplugin.Args) (_ types.Result, retErr error) {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	nsf, err := netns.Open(a.Netns)
	if err != nil {
		return nil, netns.CNIError(err, a.Netns)
	}
	defer nsf.Close()
	undo := &cniplugin.Undo{}
	defer undo.OnError(&retErr, a.Logger())

	master, err := createLink(a, c, nsf, undo)
	if err != nil {
		return nil, err
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: a.IfName, Sandbox: a.Netns}},
	}
	if c.IPAM.Type != "" {
		if err := runIPAM(ctx, a, c, res, undo); err != nil {
			return nil, err
		}
	}
	err = netns.DoFile(nsf, func() error { return configure(a.IfName, c, res) })
	if err != nil {
		return nil, fmt.Errorf("configuring %q in %s: %w", a.IfName, a.Netns, err)
	}
	if dnsSet(c.DNS) {
		res.DNS = c.DNS // the configuration's, as in the reference; otherwise IPAM's
	}
	a.Logger().Info("attached", "master", master, "mode", link.MacvlanModeName(c.mode), "ips", len(res.IPs))
	return res, nil
}

// createLink resolves the master and creates the macvlan, down, in the
// container. It returns the master's name.
func createLink(a *cniplugin.Args, c *NetConf, nsf *os.File, undo *cniplugin.Undo) (string, error) {
	master, err := c.resolveMaster(nsf)
	if err != nil {
		return "", err
	}
	if c.mac != nil && c.mode == netlink.MACVLAN_MODE_PASSTHRU {
		// Setting it would change the master's own MAC; the reference ignores it too.
		a.Logger().Warn("a passthru macvlan takes the master's MAC; the requested MAC is ignored", "mac", c.mac.String())
	}
	o := link.MacvlanOptions{Name: a.IfName, Master: master, Mode: c.mode, MTU: c.MTU, MAC: c.mac, BCQueueLen: c.BCQueueLen, Netns: nsf}
	if c.LinkContNs {
		o.Netns = nil // master and link share the container's namespace
		err = netns.DoFile(nsf, func() error { return link.CreateMacvlan(o) })
	} else {
		err = link.CreateMacvlan(o)
	}
	if err != nil {
		return "", createError(err, a)
	}
	undo.Push("delete macvlan "+a.IfName, func() error {
		return netns.DoFile(nsf, func() error { return link.DeleteIfExists(a.IfName) })
	})
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

// runIPAM delegates to the IPAM plugin and puts its addresses, routes and
// DNS into res, all addresses on the macvlan (interface 0).
func runIPAM(ctx context.Context, a *cniplugin.Args, c *NetConf, res *current.Result, undo *cniplugin.Undo) error {
	r, err := a.IPAM(ctx, "ADD", c.IPAM.Type)
	if err != nil {
		return err
	}
	undo.Push("release IPAM", func() error {
		_, err := a.IPAM(context.WithoutCancel(ctx), "DEL", c.IPAM.Type)
		return err
	})
	ipamRes, err := cniplugin.IPAMResult(c.IPAM.Type, r)
	if err != nil {
		return err
	}
	for _, ipc := range ipamRes.IPs {
		ipc.Interface = current.Int(0)
	}
	res.IPs, res.Routes, res.DNS = ipamRes.IPs, ipamRes.Routes, ipamRes.DNS
	return nil
}

func dnsSet(d types.DNS) bool {
	return d.Nameservers != nil || d.Search != nil || d.Options != nil || d.Domain != ""
}
