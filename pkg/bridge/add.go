// Package bridge is the bridge plugin: containers attached to a Linux
// bridge through veth pairs, a drop-in replacement for the reference CNI
// bridge plugin. The bridge binary runs it, and flannel links it in to run
// a bridge delegate without an exec.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// Plugin is the bridge plugin.
type Plugin struct{}

// Result indexes of the interfaces, fixed as in the reference plugin.
const (
	idxBridge = iota
	idxHost
	idxContainer
)

// attach is one ADD in progress.
type attach struct {
	a    *cniplugin.Args
	c    *NetConf
	ns   *os.File // the container's namespace
	undo *cniplugin.Undo
	br   *netlink.Bridge
	host netlink.Link
	res  *current.Result
	ipam types.Result // what the IPAM plugin returned
}

// Add creates (or reuses) the bridge, plugs a veth pair into it and the
// container, and applies the IPAM result. Every step registers its undo right
// after it succeeds, so a failed ADD leaves nothing behind but the bridge,
// which other attachments may already share.
func (p *Plugin) Add(ctx context.Context, a *cniplugin.Args) (_ types.Result, retErr error) {
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

	s := &attach{a: a, c: c, ns: nsf, undo: undo}
	if err := s.setupLinksAndIPAM(ctx); err != nil {
		return nil, err
	}
	switch {
	case c.IPAM.Type != "":
		err = p.setupL3(ctx, s)
	case !c.DisableContainerInterface:
		err = netns.DoFile(nsf, func() error { return containerUp(a.IfName) })
	}
	if err != nil {
		return nil, err
	}
	if err := s.finish(); err != nil {
		return nil, err
	}
	a.Logger().Info("attached", "bridge", c.BrName, "hostVeth", s.host.Attrs().Name, "ips", len(s.res.IPs))
	return s.res, nil
}

// ipamIndependent says whether an IPAM plugin can run while the links are
// created, or be released while they are deleted: host-local and static
// only read their configuration and their store, while others (dhcp) work
// through the container's interface and must run after it exists and before
// it goes. Overlapping the two saves an IPAM exec's worth (~3 ms) of an ADD.
func ipamIndependent(pluginType string) bool {
	return pluginType == "host-local" || pluginType == "static"
}

// setupLinksAndIPAM creates the links and runs IPAM, at the same time when
// the IPAM plugin allows it.
func (s *attach) setupLinksAndIPAM(ctx context.Context) error {
	t := s.c.IPAM.Type
	var ipam <-chan error
	if t != "" && ipamIndependent(t) {
		ipam = s.startIPAM(ctx)
	}
	err := s.setupLinks(ctx)
	if t != "" && ipam == nil && err == nil {
		ipam = s.startIPAM(ctx)
	}
	if ipam != nil {
		// Taken also after a link failure, so that a reservation made
		// meanwhile is on the undo stack; the link error is the one to report.
		if ipamErr := s.takeIPAM(ctx, ipam); err == nil {
			err = ipamErr
		}
	}
	return err
}

// startIPAM runs the IPAM plugin's ADD in the background, in this thread's
// namespace; s.ipam holds its result once the channel delivered nil.
func (s *attach) startIPAM(ctx context.Context) <-chan error {
	return netns.Go(func() error {
		r, err := s.a.IPAM(ctx, "ADD", s.c.IPAM.Type)
		s.ipam = r
		return err
	})
}

// takeIPAM waits for the IPAM ADD and registers its release.
func (s *attach) takeIPAM(ctx context.Context, done <-chan error) error {
	a, t := s.a, s.c.IPAM.Type
	if err := <-done; err != nil {
		return err
	}
	s.undo.Push("release IPAM", func() error {
		_, err := a.IPAM(context.WithoutCancel(ctx), "DEL", t)
		return err
	})
	return nil
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
	host, err := link.CreateVeth(link.VethOptions{PeerName: s.a.IfName, Peer: s.ns, MTU: c.MTU, PeerMAC: c.mac})
	if errors.Is(err, link.ErrNameTaken) {
		return netconf.Errorf(netconf.CodeInvalidEnv, "container %s already has an interface %q; pass another CNI_IFNAME or remove that interface: %w", s.a.Netns, s.a.IfName, err)
	}
	if err != nil {
		return err
	}
	hostName := host.Attrs().Name
	s.undo.Push("delete veth "+hostName, func() error { return link.DeleteIfExists(hostName) })
	s.host = host
	if err := s.plugPort(host); err != nil {
		return err
	}
	cont, err := s.containerIface()
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

func (s *attach) containerIface() (*current.Interface, error) {
	iface := &current.Interface{Name: s.a.IfName, Sandbox: s.a.Netns}
	err := netns.DoFile(s.ns, func() error {
		l, err := link.ByName(s.a.IfName)
		if err != nil {
			return err
		}
		iface.Mac = l.Attrs().HardwareAddr.String()
		return nil
	})
	return iface, err
}

func (s *attach) setupSpoofCheck(ctx context.Context, mac string) error {
	sc := spoofCheck(s.a, s.host.Attrs().Name, mac)
	if err := sc.Setup(ctx); err != nil {
		return err
	}
	s.undo.Push("remove macspoofchk rules", func() error { return sc.Teardown(context.WithoutCancel(ctx)) })
	return nil
}

func spoofCheck(a *cniplugin.Args, hostIf, mac string) link.SpoofCheck {
	return link.SpoofCheck{ID: a.ContainerID + "-" + a.IfName, HostIf: hostIf, MAC: mac}
}

// containerUp brings the container side up in L2 mode, where no address
// configuration does it.
func containerUp(ifName string) error {
	l, err := link.ByName(ifName)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %q up: %w", ifName, err)
	}
	return nil
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
			return fmt.Errorf("bridge port %q is still %s after %v; check that the container side %q is up", hostName, host.Attrs().OperState, portUpTimeout, s.a.IfName)
		}
		time.Sleep(20 * time.Millisecond)
	}
	br, err := link.BridgeByName(s.c.BrName)
	if err != nil {
		return err
	}
	s.res.Interfaces[idxBridge].Mac = br.HardwareAddr.String()
	if dnsSet(s.c.DNS) {
		s.res.DNS = s.c.DNS
	}
	return nil
}

func dnsSet(d types.DNS) bool {
	return d.Nameservers != nil || d.Search != nil || d.Options != nil || d.Domain != ""
}
