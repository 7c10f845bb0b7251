package dhcp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/rpc"
	"path/filepath"
	"slices"
	"strings"
	"time"

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

// handshakeTimeout bounds the dial and the daemon's answer to it: a live
// daemon answers at once, a stopped or hung one must not hang the runtime.
var handshakeTimeout = 10 * time.Second

// Add asks the daemon for a lease on CNI_IFNAME in CNI_NETNS.
func (Plugin) Add(_ context.Context, a *cniplugin.Args) (types.Result, error) {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	res := &current.Result{}
	if err := call(c, "DHCP.Allocate", a, res); err != nil {
		return nil, err
	}
	res.CNIVersion = current.ImplementedSpecVersion
	return res, nil
}

// Check asks the daemon for the attachment's lease and compares its
// address with the prevResult's.
func (Plugin) Check(_ context.Context, a *cniplugin.Args) error {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	prev, err := c.CheckPrevResult()
	if err != nil {
		return err
	}
	res := &current.Result{}
	if err := call(c, "DHCP.Check", a, res); err != nil {
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
func (Plugin) Del(_ context.Context, a *cniplugin.Args) error {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	return call(c, "DHCP.Release", a, &struct{}{})
}

// GC has the daemon release the leases of this network whose attachment
// is not in the valid list.
func (Plugin) GC(_ context.Context, a *cniplugin.Args) error {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	return call(c, "DHCP.GC", a, &struct{}{})
}

// Status is ready when the daemon answers on its socket.
func (Plugin) Status(_ context.Context, a *cniplugin.Args) error {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	client, err := dial(c.socketPath())
	if err != nil {
		return err
	}
	return client.Close()
}

// call sends a to the daemon's method and decodes its answer into reply.
func call(c *netConf, method string, a *cniplugin.Args, reply any) error {
	netnsPath := a.Netns
	if netnsPath != "" {
		// The daemon does not share the runtime's working directory.
		abs, err := filepath.Abs(netnsPath)
		if err != nil {
			return netconf.Errorf(netconf.CodeInvalidEnv, "CNI_NETNS %q cannot be made absolute: %w", netnsPath, err)
		}
		netnsPath = abs
	}
	client, err := dial(c.socketPath())
	if err != nil {
		return err
	}
	defer client.Close()
	req := &Request{ContainerID: a.ContainerID, Netns: netnsPath, IfName: a.IfName, Args: a.Args, Path: a.Path, StdinData: a.StdinData}
	if err := client.Call(method, req, reply); err != nil {
		return fromDaemon(method, err)
	}
	return nil
}

// dial connects to the daemon: net/rpc's HTTP handshake, bounded in time.
func dial(socket string) (*rpc.Client, error) {
	conn, err := net.DialTimeout("unix", socket, handshakeTimeout)
	if err != nil {
		return nil, daemonDown(socket, err)
	}
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := fmt.Fprintf(conn, "CONNECT %s HTTP/1.0\n\n", rpc.DefaultRPCPath); err != nil {
		conn.Close()
		return nil, daemonDown(socket, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "CONNECT"})
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("it answered %q", resp.Status)
	}
	if err != nil {
		conn.Close()
		return nil, daemonDown(socket, err)
	}
	_ = conn.SetDeadline(time.Time{}) // a lease may take the daemon's whole -resendtimeout
	return rpc.NewClient(conn), nil
}

func daemonDown(socket string, err error) error {
	return netconf.Errorf(netconf.CodeUnavailable, "the DHCP daemon does not answer on %s; start it with `dhcp daemon` (systemd: cni-dhcp.socket), or set ipam.daemonSocketPath to its -socketpath: %w", socket, err)
}

// daemonError is how the daemon sends an error with its CNI code: as JSON
// in the text of an rpc.ServerError, the one thing net/rpc carries.
type daemonError struct {
	Code uint   `json:"code"`
	Msg  string `json:"msg"`
}

// fromDaemon turns the daemon's answer back into an error with its code;
// the reference's daemon sends plain text.
func fromDaemon(method string, err error) error {
	var se rpc.ServerError
	if !errors.As(err, &se) {
		return fmt.Errorf("calling the DHCP daemon's %s: %w", method, err)
	}
	var de daemonError
	if json.Unmarshal([]byte(se), &de) == nil && de.Code != 0 {
		return &netconf.Error{Code: de.Code, Msg: de.Msg}
	}
	if strings.Contains(string(se), "can't find method") {
		return fmt.Errorf("the DHCP daemon has no %s: the reference plugins' daemon answers ADD and DEL only; run this suite's `dhcp daemon`", method)
	}
	return fmt.Errorf("the DHCP daemon's %s: %s", method, string(se))
}
