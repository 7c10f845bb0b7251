// Package ptp is the ptp plugin: a container joined to the node by a veth
// pair and routed, not bridged, a drop-in replacement for the reference
// CNI ptp plugin. The host side holds each pod address's gateway as a
// host address (/32, /128), the node routes each pod address to its veth,
// and the pod reaches its subnet through the gateway, so that every packet
// crosses the node's routing table. The ptp binary runs it.
//
// It must not import another plugin's package, pkg/overlay or pkg/subnet:
// what it shares with bridge lives in pkg/containerif, pkg/link and
// pkg/netfilter/masq.
package ptp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
	"github.com/cnisuite/cni/pkg/netns"
)

// New is the ptp plugin. What it sets up on the node (the host veth, its
// addresses and routes) goes with the veth pair, which goes with the
// pod's namespace; only the masquerade rules outlive it, and DEL removes
// them whether or not the namespace is still there.
func New() cniplugin.Plugin {
	return containerif.New(containerif.Parts[*NetConf]{Load: loadConf, Add: add, Check: check, Del: teardown, GC: gc})
}

// Result indexes of the interfaces, as in the reference plugin.
const (
	idxHost = iota
	idxContainer
)

// add is ptp's part of ADD: the veth pair (at the same time as IPAM when
// the IPAM type allows it), the container's addresses and routes, the host
// side's, then masquerading. Each step registers its undo right after it
// succeeds, so a failed ADD leaves nothing behind.
func add(ctx context.Context, t *containerif.Attach, c *NetConf) (*current.Result, error) {
	var host netlink.Link
	ipam, err := t.IPAM(ctx, c.IPAM.Type, idxContainer, func() (err error) {
		host, err = createVeth(t, c)
		return err
	})
	if err != nil {
		return nil, err
	}
	hops, err := planHops(ipam.IPs)
	if err != nil {
		return nil, err
	}
	cont, err := t.Iface()
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, IPs: ipam.IPs, Routes: ipam.Routes,
		Interfaces: []*current.Interface{{Name: host.Attrs().Name, Mac: host.Attrs().HardwareAddr.String()}, cont},
		DNS:        containerif.DNS(c.DNS, ipam.DNS)}
	if err := setupContainer(t, res, hops); err != nil {
		return nil, err
	}
	if err := setupHost(host, hops); err != nil {
		return nil, err
	}
	if c.IPMasq {
		if err := setupMasq(ctx, t, c, hops); err != nil {
			return nil, err
		}
	}
	t.Args.Logger().Info("attached", "hostVeth", host.Attrs().Name, "ips", len(res.IPs))
	return res, nil
}

// createVeth creates the pair, CNI_IFNAME in the container, and registers
// its deletion, which takes the host side's addresses and routes along.
func createVeth(t *containerif.Attach, c *NetConf) (netlink.Link, error) {
	host, err := link.CreateVeth(link.VethOptions{PeerName: t.Args.IfName, Peer: t.Netns, MTU: c.MTU})
	if errors.Is(err, link.ErrNameTaken) {
		return nil, netconf.Errorf(netconf.CodeInvalidEnv, "container %s already has an interface %q; pass another CNI_IFNAME or remove that interface: %w", t.Args.Netns, t.Args.IfName, err)
	}
	if err != nil {
		return nil, err
	}
	t.Created("veth")
	return host, nil
}

// setupContainer applies the IPAM result in the container, then replaces
// each address's subnet route by the reference's pair: the gateway as a
// link-scope host route, the subnet via the gateway. Nothing in the pod's
// subnet is then reached by ARP but the gateway, the host side.
func setupContainer(t *containerif.Attach, res *current.Result, hops []hop) error {
	if err := t.Configure(res, containerif.Options{}); err != nil {
		return err
	}
	name := t.Args.IfName
	err := netns.DoFile(t.Netns, func() error {
		l, err := link.ByName(name)
		if err != nil {
			return err
		}
		for _, h := range hops {
			if err := h.routeViaGateway(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("routing %q in %s through its gateway: %w", name, t.Args.Netns, err)
	}
	return nil
}

// setupMasq masquerades the pod's addresses with the configured backend
// and registers the undo.
func setupMasq(ctx context.Context, t *containerif.Attach, c *NetConf, hops []hop) error {
	addrs := make([]netip.Prefix, len(hops))
	for i, h := range hops {
		addrs[i] = h.addr
	}
	undo, err := c.masq.Setup(ctx, attachment(c, t.Args), addrs)
	if err != nil {
		return err
	}
	t.Undo.Push("remove masquerade rules", undo)
	return nil
}

func attachment(c *NetConf, a *cniplugin.Args) masq.Attachment {
	return masq.Attachment{Network: c.Name, ContainerID: a.ContainerID, IfName: a.IfName}
}

// teardown is what ptp's DEL removes besides the veth pair and the IPAM
// reservation: the masquerade rules, in both backends, also when the
// pod's namespace is gone (the reference's DEL then skips them and leaves
// its chain behind).
func teardown(ctx context.Context, a *cniplugin.Args, c *NetConf) containerif.Teardown {
	if !c.IPMasq {
		return containerif.Teardown{}
	}
	return containerif.Teardown{Also: masq.Teardowns(ctx, attachment(c, a))}
}

// gc removes the masquerade rules of this network whose attachment is not
// in the valid list, in both backends, even with ipMasq now off.
func gc(ctx context.Context, c *NetConf) error {
	return masq.GCAll(ctx, c.Name, c.ValidList())
}

// enableForwarding turns on forwarding for the families of hops.
func enableForwarding(hops []hop) error {
	var done [2]bool
	for _, h := range hops {
		if f := family.OfPrefix(h.addr); !done[f] {
			if err := link.EnableForwarding(f); err != nil {
				return err
			}
			done[f] = true
		}
	}
	return nil
}
