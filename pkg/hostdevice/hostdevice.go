// Package hostdevice is the host-device plugin: a device of the node (a
// NIC, an SR-IOV function, any link the kernel lets change namespace) lent
// to a container under CNI_IFNAME and given back on DEL, a drop-in
// replacement for the reference CNI host-device plugin. The host-device
// binary runs it.
//
// It owns the lookup of the device (by name, MAC, sysfs path, PCI or
// auxiliary bus address) and its moves between the namespaces. It must not
// import another plugin's package, pkg/netfilter, pkg/overlay or
// pkg/subnet: what it shares with the other interface plugins lives in
// pkg/containerif and pkg/link.
package hostdevice

import (
	"context"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/netns"
)

// New is the host-device plugin, reading the machine's sysfs.
func New() cniplugin.Plugin { return withSysfs("/sys") }

// withSysfs is the plugin with its bus lookups (pciBusID, deviceID, the
// DPDK driver) under sys.
func withSysfs(sys string) cniplugin.Plugin {
	return containerif.New(containerif.Parts[*NetConf]{
		Load: loadConf,
		Add: func(ctx context.Context, t *containerif.Attach, c *NetConf) (*current.Result, error) {
			return add(ctx, t, c, sys)
		},
		Check: func(k *containerif.Checking, c *NetConf) error { return check(k, c, sys) },
		Del:   del,
		// No Status part: STATUS is IPAM's alone, as the reference's. The
		// device is absent from the node while lent to a pod, and a failed
		// STATUS marks the runtime's network, and so the node, not ready.
	})
}

// add is host-device's part of ADD: the device found in the node's
// namespace, moved into the container (at the same time as host-local or
// static reserve the addresses), and configured there. A DPDK device has no
// link: only IPAM runs, and the result names CNI_IFNAME without a MAC, as
// the reference's does.
func add(ctx context.Context, t *containerif.Attach, c *NetConf, sys string) (*current.Result, error) {
	dev, err := c.find(sys)
	if err != nil {
		return nil, err
	}
	var move func() error
	if dev != nil {
		move = func() error { return lend(t, dev) }
	}
	ipam, err := t.IPAM(ctx, c.IPAM.Type, 0, move)
	if err != nil {
		return nil, err
	}
	if dev == nil {
		res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{{Name: t.Args.IfName, Sandbox: t.Args.Netns}}}
		if ipam != nil {
			res.IPs, res.Routes, res.DNS = ipam.IPs, ipam.Routes, containerif.DNS(c.DNS, ipam.DNS)
		}
		t.Args.Logger().Info("attached a DPDK device: IPAM only", "ips", len(res.IPs))
		return res, nil
	}
	res, err := t.Finish(ipam, c.DNS, containerif.Options{})
	if err != nil {
		return nil, err
	}
	t.Args.Logger().Info("attached", "device", dev.Attrs().Name, "ips", len(res.IPs))
	return res, nil
}

// check is host-device's part of CHECK: CNI_IFNAME in the container is a
// device this plugin lent (its alias names it on the node; the configured
// "device" when set), with the prevResult's MAC, addresses and routes.
func check(k *containerif.Checking, c *NetConf, sys string) error {
	if dpdk, err := c.dpdk(sys); dpdk || err != nil {
		return err // a DPDK device has nothing in the container to check
	}
	lent := func(l netlink.Link) error {
		alias := l.Attrs().Alias
		switch {
		case alias == "":
			return fmt.Errorf("container interface %q has no alias naming a node device: host-device did not move it there", l.Attrs().Name)
		case c.Device != "" && alias != c.Device:
			return fmt.Errorf("container interface %q is the node's %q, the configuration names %q", l.Attrs().Name, alias, c.Device)
		}
		return nil
	}
	return netns.Do(k.Args.Netns, func() error {
		_, err := k.Link(containerif.Want{Kind: lent})
		return err
	})
}

// del is host-device's part of DEL: the device given back instead of
// deleted (Unlink).
func del(_ context.Context, a *cniplugin.Args, _ *NetConf) containerif.Teardown {
	return containerif.Teardown{Unlink: func() error { return giveBack(a) }}
}
