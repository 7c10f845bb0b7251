// Package bridge is the bridge plugin: containers attached to a Linux
// bridge through veth pairs, a drop-in replacement for the reference CNI
// bridge plugin. The bridge binary runs it, and flannel links it in to run
// a bridge delegate without an exec. It must not import another plugin's
// package (pkg/flannel, pkg/portmap, ...), pkg/overlay or pkg/subnet: what
// it shares with them lives in pkg/containerif, pkg/link and pkg/netfilter/masq.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
)

// New is the bridge plugin.
func New() cniplugin.Plugin {
	return containerif.New(containerif.Parts[*NetConf]{Load: loadConf, Add: add, Check: check, Del: rulesTeardown, GC: gc})
}

// Result indexes of the interfaces, fixed as in the reference plugin.
const (
	idxBridge = iota
	idxHost
	idxContainer
)

// attach is one ADD in progress.
type attach struct {
	*containerif.Attach
	c    *NetConf
	br   *netlink.Bridge
	host netlink.Link
	res  *current.Result
	ipam *current.Result // what the IPAM plugin returned; nil without IPAM
}

// add is the bridge's part of ADD: it creates (or reuses) the bridge, plugs a
// veth pair into it and the container, and applies the IPAM result. Every
// step registers its undo right after it succeeds, so a failed ADD leaves
// nothing behind but the bridge, which other attachments may already share.
func add(ctx context.Context, t *containerif.Attach, c *NetConf) (*current.Result, error) {
	s := &attach{Attach: t, c: c}
	var err error
	// The links and IPAM at the same time when the IPAM plugin allows it.
	s.ipam, err = t.IPAM(ctx, c.IPAM.Type, idxContainer, func() error { return s.setupLinks(ctx) })
	if err != nil {
		return nil, err
	}
	switch {
	case s.ipam != nil:
		err = setupL3(ctx, s)
	case !c.DisableContainerInterface:
		err = t.Configure(s.res, c.ifOptions()) // L2 mode: only up
	}
	if err != nil {
		return nil, err
	}
	if err := s.finish(); err != nil {
		return nil, err
	}
	t.Args.Logger().Info("attached", "bridge", c.BrName, "hostVeth", s.host.Attrs().Name, "ips", len(s.res.IPs))
	return s.res, nil
}

// ifOptions is how the container's interface is configured.
func (c *NetConf) ifOptions() containerif.Options {
	return containerif.Options{DAD: c.EnableDad}
}

// setupLinks creates the bridge and the veth pair and fills the result's
// three interfaces.
func (s *attach) setupLinks(ctx context.Context) error {
	c := s.c
	br, err := link.EnsureBridge(link.BridgeOptions{Name: c.BrName, MTU: c.MTU, Promisc: c.PromiscMode,
		VlanFiltering: c.Vlan != 0 || c.VlanTrunk != nil})
	if err != nil {
		return fmt.Errorf("setting up bridge %q: %w", c.BrName, err)
	}
	s.br = br
	host, err := link.CreateVeth(link.VethOptions{PeerName: s.Args.IfName, Peer: s.Netns, MTU: c.MTU, PeerMAC: c.mac})
	if errors.Is(err, link.ErrNameTaken) {
		return netconf.Errorf(netconf.CodeInvalidEnv, "container %s already has an interface %q; pass another CNI_IFNAME or remove that interface: %w", s.Args.Netns, s.Args.IfName, err)
	}
	if err != nil {
		return err
	}
	hostName := host.Attrs().Name
	s.Undo.Push("delete veth "+hostName, func() error { return link.DeleteIfExists(hostName) })
	s.host = host
	if err := s.plugPort(host); err != nil {
		return err
	}
	cont, err := s.Iface()
	if err != nil {
		return err
	}
	s.res = &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: br.Name}, {Name: hostName}, cont},
	}
	if c.MacSpoofChk {
		return s.setupSpoofCheck(ctx, cont.Mac)
	}
	return nil
}

// plugPort makes the host veth a port of the bridge with the configured
// flags and VLANs.
func (s *attach) plugPort(host netlink.Link) error {
	c := s.c
	err := link.AttachToBridge(host, s.br, link.PortOptions{Hairpin: c.HairpinMode, Isolated: c.PortIsolation})
	if err != nil {
		return err
	}
	return link.SetPortVlans(host, link.VlanOptions{Access: c.Vlan, Trunk: c.vlans, PreserveDefault: c.PreserveDefaultVlan})
}

func (s *attach) setupSpoofCheck(ctx context.Context, mac string) error {
	sc := spoofCheck(s.Args, s.host.Attrs().Name, mac)
	if err := sc.Setup(ctx); err != nil {
		return err
	}
	s.Undo.Push("remove macspoofchk rules", func() error { return sc.Teardown(context.WithoutCancel(ctx)) })
	return nil
}

func spoofCheck(a *cniplugin.Args, hostIf, mac string) link.SpoofCheck {
	return link.SpoofCheck{ID: a.ContainerID + "-" + a.IfName, HostIf: hostIf, MAC: mac}
}

// portUpTimeout is how long a new bridge port may take to come up: the
// kernel sets the carrier once both ends of the veth are up.
const portUpTimeout = 3 * time.Second

// finish waits for the bridge port and refreshes the MACs, which the kernel
// may change while ports and addresses are added.
func (s *attach) finish() error {
	hostName := s.host.Attrs().Name
	deadline := time.Now().Add(portUpTimeout)
	for {
		host, err := link.ByName(hostName)
		if err != nil {
			return err
		}
		s.res.Interfaces[idxHost].Mac = host.Attrs().HardwareAddr.String()
		if s.c.DisableContainerInterface || host.Attrs().OperState == netlink.OperUp {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bridge port %q is still %s after %v; check that the container side %q is up", hostName, host.Attrs().OperState, portUpTimeout, s.Args.IfName)
		}
		time.Sleep(20 * time.Millisecond)
	}
	br, err := link.BridgeByName(s.c.BrName)
	if err != nil {
		return err
	}
	s.res.Interfaces[idxBridge].Mac = br.HardwareAddr.String()
	s.res.DNS = containerif.DNS(s.c.DNS, s.res.DNS)
	return nil
}
