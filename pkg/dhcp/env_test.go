package dhcp

import (
	"bufio"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/proc"
	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/cniplugin"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// env is one test's network: a node namespace with a bridge, a server
// namespace on it running dnsmasq, a pod namespace whose eth0 is a veth
// to the bridge, and the daemon in the node namespace on a temporary
// socket. The node has an address on the bridge, so it reaches the server.
type env struct {
	t         *testing.T
	node, srv *netnstest.NS
	pod       *netnstest.NS
	dir       string // sockets, state, the lease file
	daemon    *exec.Cmd
	server    *exec.Cmd
	logs      *testutil.SyncBuffer // dnsmasq's and the daemon's stderr
}

const (
	serverIP  = "10.77.0.1"
	leaseSecs = 120 // dnsmasq's shortest lease; T1 and T2 are set short below
	renewSecs = 3
)

func newEnv(t *testing.T) *env {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	if _, err := os.Stat("/usr/sbin/dnsmasq"); err != nil {
		t.Skip("needs dnsmasq (Debian's dnsmasq-base)")
	}
	e := &env{t: t, node: netnstest.New(t, "dh-node"), srv: netnstest.New(t, "dh-srv"), pod: netnstest.New(t, "dh-pod"), dir: t.TempDir(), logs: &testutil.SyncBuffer{}}
	e.node.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	e.node.Run(t, "ip", "addr", "add", "10.77.0.2/24", "dev", "br0")
	e.node.Run(t, "ip", "link", "set", "br0", "up")
	e.plug(e.srv, "s0", serverIP+"/24")
	e.plug(e.pod, "eth0", "")
	e.startServer()
	e.startDaemon()
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

// startServer runs dnsmasq in the server namespace, renewals asked for
// every renewSecs seconds.
func (e *env) startServer() {
	cmd := exec.Command("ip", "netns", "exec", e.srv.Name, "/usr/sbin/dnsmasq", "--no-daemon", "--conf-file=/dev/null",
		"--user=root", "--port=0", "--interface=s0", "--bind-interfaces", "--no-ping", "--dhcp-authoritative",
		"--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,"+strconv.Itoa(leaseSecs),
		"--dhcp-option=option:router,10.77.0.1",
		"--dhcp-option=option:T1,"+strconv.Itoa(renewSecs), "--dhcp-option=option:T2,"+strconv.Itoa(2*renewSecs),
		"--dhcp-leasefile="+e.leaseFile(), "--pid-file="+filepath.Join(e.dir, "dnsmasq.pid"))
	e.server = cmd
	e.start(cmd, "started, version")
}

// startDaemon runs `dhcp daemon` in the node namespace and waits until it
// serves; flags come after the tests' defaults.
func (e *env) startDaemon(flags ...string) {
	bin := testutil.Plugins(e.t, "plugins/ipam/dhcp")
	args := []string{"netns", "exec", e.node.Name, bin + "/dhcp", "daemon", "-socketpath", e.socket(), "-statedir", filepath.Join(e.dir, "state"),
		"-timeout", "1s", "-resendtimeout", "15s", "-loglevel", "debug"}
	e.daemon = exec.Command("ip", append(args, flags...)...)
	e.start(e.daemon, "serving")
}

// stopDaemon ends the daemon as systemd would.
func (e *env) stopDaemon() {
	proc.Stop(e.daemon, 5*time.Second)
}

// start runs cmd, ended with the test, and returns once its stderr shows
// ready; what it writes there goes on into e.logs.
func (e *env) start(cmd *exec.Cmd, ready string) {
	e.t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { proc.Stop(cmd, 5*time.Second) })
	up := make(chan struct{})
	go func() {
		var once sync.Once
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			_, _ = e.logs.Write([]byte(sc.Text() + "\n"))
			if strings.Contains(sc.Text(), ready) {
				once.Do(func() { close(up) })
			}
		}
	}()
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		e.t.Fatalf("%s did not start:\n%s", cmd.Args, e.logs.String())
	}
}

func (e *env) socket() string    { return filepath.Join(e.dir, "dhcp.sock") }
func (e *env) leaseFile() string { return filepath.Join(e.dir, "dnsmasq.leases") }

// conf is the test network's configuration with over's keys in its ipam.
func (e *env) conf(version string, over map[string]any) []byte {
	ipam := map[string]any{"type": "dhcp", "daemonSocketPath": e.socket()}
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

// leases returns dnsmasq's lease file: expiry time by address.
func (e *env) leases() map[string]string {
	e.t.Helper()
	b, err := os.ReadFile(e.leaseFile())
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 3 {
			out[f[2]] = f[0]
		}
	}
	return out
}

// waitLeases waits until dnsmasq's lease file satisfies ok: dnsmasq
// rewrites it on every change, and the test reads it ten times a second.
func (e *env) waitLeases(what string, within time.Duration, ok func(map[string]string) bool) map[string]string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		l := e.leases()
		if ok(l) {
			return l
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("%s: not within %s; leases %v; daemon log:\n%s", what, within, l, e.logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
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
