package bridge

import (
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netns"
)

// check is the bridge's part of CHECK: it verifies that what ADD reported
// still holds: the bridge, the container interface (MAC, MTU, addresses,
// routes), and a host veth that is its peer and a port of the bridge. It
// works without IPAM (L2 mode).
func check(k *containerif.Checking, c *NetConf) error {
	br, err := checkBridge(c)
	if err != nil {
		return err
	}
	var cont netlink.Link
	err = netns.Do(k.Args.Netns, func() error {
		cont, err = k.Link(containerif.Want{Kind: containerif.IsVeth, MAC: c.mac, MTU: c.MTU})
		return err
	})
	if err != nil {
		return netns.CNIError(err, k.Args.Netns)
	}
	return checkHostVeth(k.Prev, br, cont)
}

func checkBridge(c *NetConf) (*netlink.Bridge, error) {
	br, err := link.BridgeByName(c.BrName)
	if err != nil {
		return nil, fmt.Errorf("CNI bridge %q: %w", c.BrName, err)
	}
	if promisc := br.Promisc != 0; promisc != c.PromiscMode {
		return nil, fmt.Errorf("bridge %q has promiscuous mode %v, the configuration says %v", c.BrName, promisc, c.PromiscMode)
	}
	if c.MTU != 0 && br.MTU != c.MTU {
		return nil, fmt.Errorf("bridge %q has MTU %d, the configuration says %d", c.BrName, br.MTU, c.MTU)
	}
	return br, nil
}

// checkHostVeth finds, among the prevResult's host interfaces, the veth
// that is the container interface's peer and checks it is a port of br.
func checkHostVeth(prev *current.Result, br *netlink.Bridge, cont netlink.Link) error {
	for _, iface := range prev.Interfaces {
		if iface.Sandbox != "" || iface.Name == br.Name {
			continue
		}
		l, err := netlink.LinkByName(iface.Name)
		if err != nil || l.Attrs().Index != cont.Attrs().ParentIndex {
			continue
		}
		if _, ok := l.(*netlink.Veth); !ok || l.Attrs().ParentIndex != cont.Attrs().Index {
			return fmt.Errorf("host interface %q is not the veth peer of container interface %q", iface.Name, cont.Attrs().Name)
		}
		if l.Attrs().MasterIndex != br.Index {
			return fmt.Errorf("host veth %q is not a port of bridge %q; re-run ADD or attach it (ip link set %s master %s)", iface.Name, br.Name, iface.Name, br.Name)
		}
		if iface.Mac != "" && iface.Mac != l.Attrs().HardwareAddr.String() {
			return fmt.Errorf("host veth %q has MAC %s, the prevResult says %s", iface.Name, l.Attrs().HardwareAddr, iface.Mac)
		}
		return nil
	}
	return fmt.Errorf("no host veth of the prevResult is the peer of container interface %q (peer ifindex %d); it was deleted or replaced", cont.Attrs().Name, cont.Attrs().ParentIndex)
}
