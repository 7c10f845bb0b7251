package main

import (
	"context"
	"fmt"
	"os"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netns"
)

// Check verifies that what ADD reported still holds: the container
// interface is a macvlan of the configured mode on the configured master
// (matched by ifindex and namespace, not by name), with the MAC, MTU,
// addresses and routes of the prevResult. It works without IPAM (L2 mode).
func (p *plugin) Check(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	prev, err := c.CheckPrevResult()
	if err != nil {
		return err
	}
	if _, err := a.IPAM(ctx, "CHECK", c.IPAM.Type); err != nil {
		return err
	}
	idx, err := a.IfaceIndex(prev)
	if err != nil {
		return err
	}
	nsf, err := netns.Open(a.Netns)
	if err != nil {
		return netns.CNIError(err, a.Netns)
	}
	defer nsf.Close()
	want, err := c.wantMacvlan(nsf)
	if err != nil {
		return err
	}
	return netns.DoFile(nsf, func() error { return checkContainer(c, prev, idx, want) })
}

// wantMacvlan resolves the master as ADD did and says how the container's
// link must refer to it: by the master's ifindex and, when the master is
// in the node, by the id the container gives the node's namespace.
func (c *NetConf) wantMacvlan(container *os.File) (link.MacvlanWant, error) {
	w := link.MacvlanWant{Mode: c.mode, MasterNsID: -1}
	master, err := c.resolveMaster(container)
	if err != nil {
		return w, err
	}
	w.MasterIndex = master.Attrs().Index
	if c.LinkContNs {
		return w, nil
	}
	node, err := netns.Here()
	if err != nil {
		return w, err
	}
	defer node.Close()
	err = netns.DoFile(container, func() error {
		w.MasterNsID, err = netlink.GetNetNsIdByFd(int(node.Fd()))
		return err
	})
	if err != nil {
		return w, fmt.Errorf("reading the container's id for the node's namespace: %w", err)
	}
	return w, nil
}

// checkContainer runs inside the container.
func checkContainer(c *NetConf, prev *current.Result, idx int, want link.MacvlanWant) error {
	iface := prev.Interfaces[idx]
	l, err := link.ByName(iface.Name)
	if err != nil {
		return err
	}
	if err := link.VerifyMacvlan(l, want); err != nil {
		return err
	}
	if mac := l.Attrs().HardwareAddr.String(); iface.Mac != "" && iface.Mac != mac {
		return fmt.Errorf("container interface %q has MAC %s, the prevResult says %s", iface.Name, mac, iface.Mac)
	}
	if c.MTU != 0 && l.Attrs().MTU != c.MTU {
		return fmt.Errorf("container interface %q has MTU %d, the configuration says %d", iface.Name, l.Attrs().MTU, c.MTU)
	}
	return link.CheckResult(l, prev, idx)
}
