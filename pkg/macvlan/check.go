package macvlan

import (
	"fmt"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netns"
)

// check is macvlan's part of CHECK: the container interface is a macvlan of
// the configured mode on the configured master (matched by ifindex and
// namespace, not by name), with the MAC, MTU, addresses and routes of the
// prevResult. It works without IPAM (L2 mode).
func check(k *containerif.Checking, c *NetConf) error {
	nsf, err := netns.Open(k.Args.Netns)
	if err != nil {
		return netns.CNIError(err, k.Args.Netns)
	}
	defer nsf.Close()
	mv, err := c.wantMacvlan(nsf)
	if err != nil {
		return err
	}
	// No configured MAC to compare: a passthru macvlan has the master's.
	want := containerif.Want{Kind: func(l netlink.Link) error { return link.VerifyMacvlan(l, mv) }, MTU: c.MTU}
	return netns.DoFile(nsf, func() error {
		_, err := k.Link(want)
		return err
	})
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
