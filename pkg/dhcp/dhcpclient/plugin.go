// Package dhcpclient is the dhcp IPAM plugin's verbs, each forwarded to the
// dhcp daemon (pkg/dhcp) over its unix socket in the reference's net/rpc
// protocol, so either side may be the reference's. The dhcp binary runs it,
// and the interface plugins link it to run dhcp IPAM in their own process.
//
// Since every interface plugin links it, it must not import net/rpc (its
// debug page brings html/template), encoding/gob (a costly init), net/http,
// the daemon's package pkg/dhcp or its DHCP library; nor pkg/link: it hands
// out addresses and never configures a link.
package dhcpclient

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
)

// Plugin is dhcp's verbs, each forwarded to the daemon.
type Plugin struct{}

// Request is what the plugin sends the daemon: the fields of the
// reference's skel.CmdArgs, which its daemon decodes by name.
type Request struct {
	ContainerID string
	Netns       string
	IfName      string
	Args        string
	Path        string
	StdinData   []byte
}

// Add asks the daemon for a lease on CNI_IFNAME in CNI_NETNS.
func (Plugin) Add(ctx context.Context, a *cniplugin.Args) (types.Result, error) {
	c, err := Load(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	res := &current.Result{}
	if err := call(ctx, c, "DHCP.Allocate", a, res); err != nil {
		return nil, err
	}
	res.CNIVersion = current.ImplementedSpecVersion
	return res, nil
}

// Check asks the daemon for the attachment's lease and compares its
// address with the prevResult's.
func (Plugin) Check(ctx context.Context, a *cniplugin.Args) error {
	c, err := Load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	prev, err := c.CheckPrevResult()
	if err != nil {
		return err
	}
	res := &current.Result{}
	if err := call(ctx, c, "DHCP.Check", a, res); err != nil {
		return err
	}
	for _, ip := range res.IPs {
		want, _ := netip.AddrFromSlice(ip.Address.IP)
		if !slices.ContainsFunc(prev.IPs, func(p *current.IPConfig) bool {
			got, _ := netip.AddrFromSlice(p.Address.IP)
			return got.Unmap() == want.Unmap()
		}) {
			return fmt.Errorf("dhcp: the lease of %s is %s, which the prevResult does not list; run ADD again", a.IfName, ip.Address.String())
		}
	}
	return nil
}

// Del has the daemon release the lease; without one it is a success.
func (Plugin) Del(ctx context.Context, a *cniplugin.Args) error {
	c, err := Load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	return call(ctx, c, "DHCP.Release", a, &struct{}{})
}

// GC has the daemon release the leases of this network whose attachment
// is not in the valid list.
func (Plugin) GC(ctx context.Context, a *cniplugin.Args) error {
	c, err := Load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	return call(ctx, c, "DHCP.GC", a, &struct{}{})
}

// Status is ready when the daemon answers on its socket.
func (Plugin) Status(_ context.Context, a *cniplugin.Args) error {
	c, err := Load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	conn, err := dial(c.SocketPath())
	if err != nil {
		return err
	}
	return conn.Close()
}

// call sends a to the daemon's method and decodes its answer into reply.
func call(ctx context.Context, c *Conf, method string, a *cniplugin.Args, reply any) error {
	netnsPath := a.Netns
	if netnsPath != "" {
		// The daemon does not share the runtime's working directory.
		abs, err := filepath.Abs(netnsPath)
		if err != nil {
			return netconf.Errorf(netconf.CodeInvalidEnv, "CNI_NETNS %q cannot be made absolute: %w", netnsPath, err)
		}
		netnsPath = abs
	}
	conn, err := dial(c.SocketPath())
	if err != nil {
		return err
	}
	defer conn.Close()
	req := &Request{ContainerID: a.ContainerID, Netns: netnsPath, IfName: a.IfName, Args: a.Args, Path: a.Path, StdinData: a.StdinData}
	return conn.call(ctx, method, req, reply)
}
