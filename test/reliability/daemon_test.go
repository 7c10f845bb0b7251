package reliability

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/testutil"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// The daemon fixture: a node namespace with an "underlay" bridge at nodeIP,
// an etcd server process on its loopback and subnetd. subnetd leases from
// 10.95.100.0-10.95.200.0 only: the tests' peer leases are below and above,
// and one written over the node's own key would be a lease taken over
// (subnetd then moves to another subnet; TestSubnetdEtcdFaults flaked so).
const (
	nodeIP  = "192.168.76.10"
	netConf = `{"Network":"10.95.0.0/16","SubnetMin":"10.95.100.0","SubnetMax":"10.95.200.0","Backend":{"Type":"vxlan"}}`
)

// buildSubnetd builds the daemons as installed, once, and returns subnetd.
var buildSubnetd = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(filepath.Dir(binDir), "daemon")
	return filepath.Join(dir, "subnetd"), testutil.BuildDaemons(dir)
})

type daemonNode struct {
	t   *testing.T
	ns  *netnstest.NS
	dir string
}

// newDaemonNode makes the node namespace; it needs root and etcd.
func newDaemonNode(t *testing.T) *daemonNode {
	netnstest.SkipUnlessRoot(t)
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Skip("needs etcd (Debian's etcd-server; make deps installs it)")
	}
	n := &daemonNode{t: t, ns: netnstest.New(t, "cni-rel-sd"), dir: t.TempDir()}
	n.ns.Run(t, "ip", "link", "add", "ul0", "type", "bridge")
	n.ns.Run(t, "ip", "addr", "add", nodeIP+"/24", "dev", "ul0")
	n.ns.Run(t, "ip", "link", "set", "ul0", "up")
	n.setNetConf(netConf)
	return n
}

// setNetConf writes the net-conf.json given to subnetd (stored in etcd by
// the first subnetd that finds none there).
func (n *daemonNode) setNetConf(conf string) {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(n.dir, "net-conf.json"), []byte(conf), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// proc is a process started in the node, stopped at the test's end.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (n *daemonNode) spawn(name string, argv ...string) *proc {
	n.t.Helper()
	p := &proc{log: filepath.Join(n.dir, name+".log"), done: make(chan struct{})}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", n.ns.Name}, argv...)...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	n.t.Cleanup(func() {
		p.stop()
		if n.t.Failed() {
			n.t.Logf("%s's output:\n%s", name, lastBytes(p.output(), 8<<10))
		}
	})
	return p
}

// lastBytes returns at most the last n bytes of s.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// stop ends the process with SIGTERM, or SIGKILL after 10 s.
func (p *proc) stop() { p.signal(syscall.SIGTERM, 10*time.Second) }

// kill ends the process at once.
func (p *proc) kill() { p.signal(syscall.SIGKILL, 10*time.Second) }

func (p *proc) signal(sig syscall.Signal, grace time.Duration) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// etcdArgs starts an etcd with its data in the node's dir under name,
// serving clients at url; extra adds flags (TLS).
func (n *daemonNode) startEtcd(name, url string, extra ...string) *proc {
	n.t.Helper()
	argv := append([]string{"etcd", "--name", "rel", "--data-dir", filepath.Join(n.dir, name),
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "rel=http://127.0.0.1:2380"}, extra...)
	p := n.spawn(name, argv...)
	n.eventually(name+" listening", 20*time.Second, func() bool { return n.listening(2379) })
	return p
}

// startSubnetd runs subnetd with the fixture's flags followed by extra
// (later flags win).
func (n *daemonNode) startSubnetd(name string, extra ...string) *proc {
	n.t.Helper()
	return n.spawn(name, n.subnetdArgv(extra...)...)
}

// subnetdArgv is startSubnetd's command line.
func (n *daemonNode) subnetdArgv(extra ...string) []string {
	n.t.Helper()
	bin, err := buildSubnetd()
	if err != nil {
		n.t.Fatal(err)
	}
	return append([]string{bin, "--etcd-endpoints", "http://127.0.0.1:2379", "--iface", "ul0",
		"--net-config", filepath.Join(n.dir, "net-conf.json"), "--subnet-file", filepath.Join(n.dir, "subnet.env"),
		"--data-dir", filepath.Join(n.dir, "sd"), "--node-id", "relnode", "--healthz-ip", "127.0.0.1", "--healthz-port", "9090",
		"--check-interval", "1s", "--etcd-timeout", "1s"}, extra...)
}

// ready reports whether subnetd answers 200 on /readyz at addr.
func (n *daemonNode) ready(addr string) bool {
	code, _ := n.ns.HTTP(addr, "GET", "/readyz", nil)
	return code == 200
}

func (n *daemonNode) eventually(what string, within time.Duration, cond func() bool) {
	n.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			n.t.Fatalf("not %s after %v; the node's overlay:\n%s", what, within, n.overlay())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// overlay is the node's routes, flannel.1 neighbours and FDB, for failures.
func (n *daemonNode) overlay() string {
	routes, _ := n.ns.Try("ip", "route", "show")
	neigh, _ := n.ns.Try("ip", "neigh", "show", "dev", "flannel.1")
	fdb, _ := n.ns.Try("bridge", "fdb", "show", "dev", "flannel.1")
	return routes + neigh + fdb
}

// listeners returns the local "addr:port" of every listening TCP socket in
// the node, from /proc/net/tcp and tcp6 read inside it.
func (n *daemonNode) listeners() []string {
	n.t.Helper()
	var out []string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		text := n.ns.Run(n.t, "cat", file)
		for _, line := range strings.Split(text, "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 3 && f[3] == "0A" { // TCP_LISTEN
				out = append(out, decodeProcAddr(f[1]))
			}
		}
	}
	return out
}

func (n *daemonNode) listening(port int) bool {
	for _, l := range n.listeners() {
		if strings.HasSuffix(l, fmt.Sprintf(":%d", port)) {
			return true
		}
	}
	return false
}

// etcd posts to the JSON gateway of the node's etcd (keys and values are
// base64 there) and returns the answer.
func (n *daemonNode) etcd(path string, body map[string]any) string {
	n.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		n.t.Fatal(err)
	}
	code, out := n.ns.HTTP("127.0.0.1:2379", "POST", path, b)
	if code != 200 {
		n.t.Fatalf("etcd %s: HTTP %d %s", path, code, out)
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
