// Package tap is the tap plugin: a persistent tap device made in the
// container, for a virtual machine's process there (KubeVirt, Kata) to
// open, a drop-in replacement for the reference CNI tap plugin. The tap
// binary runs it.
//
// It owns the creation of the tap through /dev/net/tun; the rest of its
// verbs is pkg/containerif's. No other plugin's package, nor pkg/netfilter,
// pkg/overlay or pkg/subnet, may be imported here.
package tap

import (
	"context"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/netns"
)

// New is the tap plugin. It keeps no state of its own: the tap lives in the
// container and the addresses in IPAM, which containerif's DEL removes.
func New() cniplugin.Plugin {
	return containerif.New(containerif.Parts[*NetConf]{Load: loadConf, Add: add, Check: check})
}

// add is tap's part of ADD: the tap made and brought up in the container
// (at the same time as host-local or static reserve the addresses), then
// configured there.
func add(ctx context.Context, t *containerif.Attach, c *NetConf) (*current.Result, error) {
	ipam, err := t.IPAM(ctx, c.IPAM.Type, 0, func() error { return create(t, c) })
	if err != nil {
		return nil, err
	}
	res, err := t.Finish(ipam, c.DNS, containerif.Options{})
	if err != nil {
		return nil, err
	}
	t.Args.Logger().Info("attached", "multiQueue", c.MultiQueue, "bridge", c.Bridge, "ips", len(res.IPs))
	return res, nil
}

// check is tap's part of CHECK: CNI_IFNAME in the container is a tap with
// the configured queue mode, owner, group, MAC, MTU and bridge, and the
// prevResult's MAC, addresses and routes.
func check(k *containerif.Checking, c *NetConf) error {
	return netns.Do(k.Args.Netns, func() error {
		l, err := k.Link(containerif.Want{Kind: c.isTap, MAC: c.mac, MTU: c.MTU})
		if err != nil || c.Bridge == "" {
			return err
		}
		br, err := netlink.LinkByName(c.Bridge)
		if err != nil || l.Attrs().MasterIndex != br.Attrs().Index {
			return fmt.Errorf("container interface %q is not a port of bridge %q", l.Attrs().Name, c.Bridge)
		}
		return nil
	})
}

// isTap compares a link with the configured tap.
func (c *NetConf) isTap(l netlink.Link) error {
	tt, ok := l.(*netlink.Tuntap)
	name := l.Attrs().Name
	switch {
	case !ok || tt.Mode != netlink.TUNTAP_MODE_TAP:
		return fmt.Errorf("container interface %q is a %s, not a tap", name, l.Type())
	case (tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0) != c.MultiQueue:
		return fmt.Errorf("container interface %q has multi_queue %v, the configuration says %v", name, !c.MultiQueue, c.MultiQueue)
	case tt.Owner != idOrNone(c.Owner) || tt.Group != idOrNone(c.Group):
		return fmt.Errorf("container interface %q has owner %d and group %d, the configuration says %d and %d", name, tt.Owner, tt.Group, idOrNone(c.Owner), idOrNone(c.Group))
	}
	return nil
}

// idOrNone is an owner or group as netlink reads it back: the kernel
// reports none, which reads as 0, as root does.
func idOrNone(id *uint32) uint32 {
	if id == nil {
		return 0
	}
	return *id
}
