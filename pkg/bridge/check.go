package bridge

import (
	"context"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netns"
)

// Check verifies that what ADD reported still holds: the bridge, the
// container interface (MAC, MTU, addresses, routes), and a host veth that is
// its peer and a port of the bridge. It works without IPAM (L2 mode).
func (p *Plugin) Check(ctx context.Context, a *cniplugin.Args) error {
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
	br, err := checkBridge(c)
	if err != nil {
		return err
	}
	contIdx, err := a.IfaceIndex(prev)
	if err != nil {
		return err
	}
	var cont netlink.Link
	err = netns.Do(a.Netns, func() error {
		cont, err = checkContainer(c, prev, contIdx)
		return err
	})
	if err != nil {
		return netns.CNIError(err, a.Netns)
	}
	return checkHostVeth(prev, br, cont)
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

// checkContainer runs inside the container and returns its interface.
func checkContainer(c *NetConf, prev *current.Result, idx int) (netlink.Link, error) {
	want := prev.Interfaces[idx]
	l, err := link.ByName(want.Name)
	if err != nil {
		return nil, err
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return nil, fmt.Errorf("container interface %q is a %s, not a veth", want.Name, l.Type())
	}
	mac := l.Attrs().HardwareAddr.String()
	if (want.Mac != "" && want.Mac != mac) || (c.mac != nil && c.mac.String() != mac) {
		return nil, fmt.Errorf("container interface %q has MAC %s, expected %s", want.Name, mac, want.Mac)
	}
	if c.MTU != 0 && l.Attrs().MTU != c.MTU {
		return nil, fmt.Errorf("container interface %q has MTU %d, the configuration says %d", want.Name, l.Attrs().MTU, c.MTU)
	}
	return l, link.CheckResult(l, prev, idx)
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
