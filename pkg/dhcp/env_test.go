package dhcp

import (
	"encoding/json"
	"maps"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/dhcp/dhcptest"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// env is one test's network: a node namespace with a bridge, a server
// namespace on it running dnsmasq, a pod namespace whose eth0 is a veth
// to the bridge, and the daemon in the node namespace on the lab's socket.
// The node has an address on the bridge, so it reaches the server.
type env struct {
	*dhcptest.Lab
	t         *testing.T
	node, srv *netnstest.NS
	pod       *netnstest.NS
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := newNet(t)
	e.StartServer(e.srv, "s0")
	e.StartDaemon(e.node)
	return e
}

// newNet is newEnv's network, without the server and the daemon.
func newNet(t *testing.T) *env {
	t.Helper()
	dhcptest.Skip(t)
	e := &env{Lab: dhcptest.New(t, t.TempDir()), t: t, node: netnstest.New(t, "dh-node"), srv: netnstest.New(t, "dh-srv"), pod: netnstest.New(t, "dh-pod")}
	e.node.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	e.node.Run(t, "ip", "addr", "add", "10.77.0.2/24", "dev", "br0")
	e.node.Run(t, "ip", "link", "set", "br0", "up")
	e.plug(e.srv, "s0", dhcptest.ServerIP+"/24")
	e.plug(e.pod, "eth0", "")
	return e
}

// plug links ns to the node's bridge by a veth named name on ns's side.
func (e *env) plug(ns *netnstest.NS, name, addr string) {
	peer := name + "-" + ns.Name[len(ns.Name)-4:]
	e.node.Run(e.t, "ip", "link", "add", peer, "master", "br0", "up", "type", "veth", "peer", "name", name, "netns", ns.Name)
	if addr != "" {
		ns.Run(e.t, "ip", "addr", "add", addr, "dev", name)
		ns.Run(e.t, "ip", "link", "set", name, "up")
	}
}

// conf is the test network's configuration with over's keys in its ipam.
func (e *env) conf(version string, over map[string]any) []byte {
	ipam := map[string]any{"type": "dhcp", "daemonSocketPath": e.Socket()}
	maps.Copy(ipam, over)
	b, err := json.Marshal(map[string]any{"cniVersion": version, "name": "dhnet", "type": "bridge", "ipam": ipam})
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// args is the pod's attachment with stdin.
func (e *env) args(cmd, containerID string, stdin []byte) *cniplugin.Args {
	return &cniplugin.Args{Command: cmd, ContainerID: containerID, Netns: e.pod.Path, IfName: "eth0", StdinData: stdin}
}

// withKey returns conf with key set to v.
func withKey(t *testing.T, conf []byte, key string, v any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = v
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withPrev returns conf with res as its prevResult.
func withPrev(t *testing.T, conf []byte, res *current.Result) []byte {
	return withKey(t, conf, "prevResult", res)
}
