package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/netns"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// The overlay test's addresses live only inside the namespaces it creates.
const (
	sdUnderlay = "192.168.77.1" // the underlay's bridge and etcd
	sdPrefix   = "/e2e/network"
	sdNetwork  = `{"Network":"10.250.0.0/16","Backend":{"Type":"vxlan"}}`
)

// sdNode is a node namespace running subnetd, with one pod.
type sdNode struct {
	name  string
	ns    *netnstest.NS
	dir   string
	ip    string
	proc  *exec.Cmd
	pod   *netnstest.NS
	podIP string
}

type overlayTest struct {
	t       *testing.T
	dir     string
	subnetd string
	ul      *netnstest.NS
	etcd    *exec.Cmd
	nodes   []*sdNode
}

// TestSubnetdOverlay: three nodes joined by an underlay, an etcd server in
// the underlay, subnetd on each node, a pod per node made by our bridge and
// host-local from the node's subnet.env; every pod reaches every other pod,
// also through a restart of subnetd, an etcd outage, a deleted lease key and
// a deleted vxlan device, and a removed node's routes go from its peers.
func TestSubnetdOverlay(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("needs etcd (Debian's etcd-server; make deps installs it)")
	}
	o := &overlayTest{t: t, dir: t.TempDir()}
	o.subnetd = filepath.Join(o.dir, "subnetd")
	if out, err := exec.Command("go", "build", "-o", o.subnetd, "github.com/cnisuite/cni/daemon/subnetd").CombinedOutput(); err != nil {
		t.Fatalf("building subnetd: %v\n%s", err, out)
	}
	o.underlay()
	o.startEtcd(etcdBin)
	for i := 1; i <= 3; i++ {
		o.addNode(i)
	}
	for _, n := range o.nodes {
		o.waitReady(n)
		o.addPod(n)
	}
	o.pingAll()
	for _, n := range o.nodes {
		if out := n.ns.Run(t, "iptables-save"); !strings.Contains(out, "-A POSTROUTING") || !strings.Contains(out, "-A FLANNEL-POSTRTG") ||
			!strings.Contains(out, "MASQUERADE") || !strings.Contains(out, "-A FLANNEL-FWD") {
			t.Fatalf("%s lacks flanneld's host rules:\n%s", n.name, out)
		}
	}

	t.Run("restart keeps subnet and traffic", func(t *testing.T) { o.restart(t) })
	t.Run("etcd outage", func(t *testing.T) { o.etcdOutage(t, etcdBin) })
	t.Run("deleted lease key", func(t *testing.T) { o.deleteLease(t) })
	t.Run("deleted vxlan device", func(t *testing.T) { o.deleteDevice(t) })
	t.Run("removed node", func(t *testing.T) { o.removeNode(t) })
}

func (o *overlayTest) underlay() {
	o.ul = netnstest.New(o.t, "sd-ul")
	o.ul.Run(o.t, "ip", "link", "add", "br0", "type", "bridge")
	o.ul.Run(o.t, "ip", "addr", "add", sdUnderlay+"/24", "dev", "br0")
	o.ul.Run(o.t, "ip", "link", "set", "br0", "up")
}

func (o *overlayTest) startEtcd(bin string) {
	o.t.Helper()
	url := "http://" + sdUnderlay + ":2379"
	o.etcd = o.spawn(o.ul, filepath.Join(o.dir, "etcd.log"), bin, "--data-dir", filepath.Join(o.dir, "etcd"),
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380")
	o.eventually("etcd serving", 20*time.Second, func() bool {
		_, err := o.etcdCall("/v3/kv/range", map[string]string{"key": b64("x")})
		return err == nil
	})
}

// spawn starts a process inside ns, logging to file, stopped at test end.
func (o *overlayTest) spawn(ns *netnstest.NS, logFile string, argv ...string) *exec.Cmd {
	o.t.Helper()
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		o.t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		o.t.Fatal(err)
	}
	o.t.Cleanup(func() { stop(cmd); f.Close() })
	return cmd
}

// stop ends a process started by spawn, once.
func stop(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (o *overlayTest) addNode(i int) {
	t := o.t
	n := &sdNode{name: fmt.Sprintf("node%d", i), ns: netnstest.New(t, "sd-n"), dir: filepath.Join(o.dir, fmt.Sprintf("node%d", i)),
		ip: fmt.Sprintf("192.168.77.%d", 10+i)}
	peer := fmt.Sprintf("sdv%d", i)
	o.ul.Run(t, "ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", n.ns.Name)
	o.ul.Run(t, "ip", "link", "set", peer, "master", "br0", "up")
	n.ns.Run(t, "ip", "addr", "add", n.ip+"/24", "dev", "eth0")
	n.ns.Run(t, "ip", "link", "set", "eth0", "up")
	n.ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(o.dir, "net-conf.json"), []byte(sdNetwork), 0o644); err != nil {
		t.Fatal(err)
	}
	o.nodes = append(o.nodes, n)
	o.startSubnetd(n)
}

func (o *overlayTest) startSubnetd(n *sdNode) {
	n.proc = o.spawn(n.ns, filepath.Join(n.dir, "subnetd.log"), o.subnetd,
		"--etcd-endpoints", "http://"+sdUnderlay+":2379", "--etcd-prefix", sdPrefix, "--iface", "eth0",
		"--net-config", filepath.Join(o.dir, "net-conf.json"), "--subnet-file", filepath.Join(n.dir, "subnet.env"),
		"--data-dir", n.dir, "--node-id", n.name, "--healthz-ip", "127.0.0.1", "--healthz-port", "9090",
		"--ip-masq", "--check-interval", "1s", "--etcd-timeout", "1s", "--lease-ttl", "10m", "--subnet-lease-renew-margin", "5")
}

func (o *overlayTest) env(n *sdNode) envfile.Env {
	o.t.Helper()
	e, err := envfile.Read(filepath.Join(n.dir, "subnet.env"))
	if err != nil {
		o.t.Fatalf("%s: %v", n.name, err)
	}
	return e
}

func (o *overlayTest) waitReady(n *sdNode) {
	o.eventually(n.name+" ready", 20*time.Second, func() bool {
		code, _ := httpGet(n.ns, "127.0.0.1:9090", "/readyz")
		return code == 200
	})
}

// addPod runs our bridge (with host-local) in the node for a new pod, on the
// subnet of the node's subnet.env, as the flannel plugin will.
func (o *overlayTest) addPod(n *sdNode) {
	t := o.t
	e := o.env(n)
	n.pod = netnstest.New(t, "sd-p")
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"sd-e2e","type":"bridge","bridge":"cni0","isGateway":true,"mtu":%d,
		"ipam":{"type":"host-local","subnet":%q,"routes":[{"dst":%q}],"dataDir":%q}}`,
		e.MTU, e.Subnet.Masked().String(), e.Network.String(), filepath.Join(n.dir, "ipam"))
	out := pluginCall{plugin: "bridge", cmd: "ADD", stdin: []byte(conf), node: n.ns,
		env: map[string]string{"CNI_NETNS": n.pod.Path, "CNI_CONTAINERID": "sd-" + n.name}}.run(t)
	if out.exit != 0 {
		t.Fatalf("bridge ADD on %s: %s %s", n.name, out.stdout, out.stderr)
	}
	var res struct {
		IPs []struct{ Address string }
	}
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil || len(res.IPs) == 0 {
		t.Fatalf("bridge result %s: %v", out.stdout, err)
	}
	n.podIP = netip.MustParsePrefix(res.IPs[0].Address).Addr().String()
}

// pingAll pings every pod from every other pod, across nodes.
func (o *overlayTest) pingAll() {
	o.t.Helper()
	for _, from := range o.nodes {
		for _, to := range o.nodes {
			if from != to && from.pod != nil && to.pod != nil {
				o.ping(from, to)
			}
		}
	}
}

func (o *overlayTest) ping(from, to *sdNode) {
	o.t.Helper()
	if out, err := from.pod.Try("ping", "-c", "1", "-W", "2", to.podIP); err != nil {
		o.t.Fatalf("pod on %s -> pod on %s (%s): %v\n%s\n%s", from.name, to.name, to.podIP, err, out, o.logs())
	}
}

func (o *overlayTest) logs() string {
	var b strings.Builder
	for _, n := range o.nodes {
		data, _ := os.ReadFile(filepath.Join(n.dir, "subnetd.log"))
		fmt.Fprintf(&b, "--- %s subnetd.log (last lines)\n%s\n", n.name, tail(string(data), 15))
	}
	return b.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (o *overlayTest) eventually(what string, within time.Duration, cond func() bool) {
	o.t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if cond() {
			return
		}
	}
	o.t.Fatalf("timed out after %v waiting for %s\n%s", within, what, o.logs())
}

// restart: subnetd stopped and started on a node keeps its subnet, and the
// pods never lose connectivity (the data plane stays while it is down).
func (o *overlayTest) restart(t *testing.T) {
	n := o.nodes[0]
	before := o.env(n)
	stop(n.proc)
	o.ping(n, o.nodes[1])
	o.ping(o.nodes[2], n)
	o.startSubnetd(n)
	o.waitReady(n)
	if after := o.env(n); after != before {
		t.Fatalf("subnet.env changed across a restart: %+v -> %+v", before, after)
	}
	o.pingAll()
}

// etcdOutage: with etcd gone for 30 s the pods still reach each other,
// /readyz says not ready, and every node is ready again after.
func (o *overlayTest) etcdOutage(t *testing.T, bin string) {
	stop(o.etcd)
	start := time.Now()
	for _, n := range o.nodes {
		o.eventually(n.name+" not ready", 10*time.Second, func() bool {
			code, _ := httpGet(n.ns, "127.0.0.1:9090", "/readyz")
			return code == 503
		})
	}
	for time.Since(start) < 30*time.Second {
		o.pingAll()
		time.Sleep(2 * time.Second)
	}
	o.startEtcd(bin)
	for _, n := range o.nodes {
		o.waitReady(n)
	}
	o.pingAll()
}

// deleteLease: a node whose lease key is deleted takes it back; the peers
// converge on it and traffic flows.
func (o *overlayTest) deleteLease(t *testing.T) {
	n := o.nodes[1]
	key := o.leaseKey(n)
	if _, err := o.etcdCall("/v3/kv/deleterange", map[string]string{"key": b64(key)}); err != nil {
		t.Fatal(err)
	}
	o.eventually("the lease re-acquired", 10*time.Second, func() bool { return o.hasKey(key) })
	o.pingAll()
}

// deleteDevice: flannel.1 deleted by hand is recreated with its peers.
func (o *overlayTest) deleteDevice(t *testing.T) {
	n := o.nodes[2]
	n.ns.Run(t, "ip", "link", "del", "flannel.1")
	o.eventually("flannel.1 recreated", 10*time.Second, func() bool {
		_, err := n.ns.Try("ip", "link", "show", "flannel.1")
		return err == nil
	})
	o.eventually("traffic restored", 10*time.Second, func() bool {
		_, err := n.pod.Try("ping", "-c", "1", "-W", "1", o.nodes[0].podIP)
		return err == nil
	})
	o.pingAll()
}

// removeNode: a node stopped and its lease deleted (as at expiry) vanishes
// from its peers' routes.
func (o *overlayTest) removeNode(t *testing.T) {
	gone := o.nodes[2]
	subnet := o.env(gone).Subnet.Masked().String()
	stop(gone.proc)
	if _, err := o.etcdCall("/v3/kv/deleterange", map[string]string{"key": b64(o.leaseKey(gone))}); err != nil {
		t.Fatal(err)
	}
	for _, n := range o.nodes[:2] {
		o.eventually(n.name+" drops the route to "+subnet, 10*time.Second, func() bool {
			out, err := n.ns.Try("ip", "route", "show", subnet)
			return err == nil && strings.TrimSpace(out) == ""
		})
	}
	o.ping(o.nodes[0], o.nodes[1])
	o.ping(o.nodes[1], o.nodes[0])
	// --cleanup leaves the removed node without device, rules or subnet.env.
	envPath := filepath.Join(gone.dir, "subnet.env")
	gone.ns.Run(t, o.subnetd, "--cleanup", "--subnet-file", envPath)
	if out, _ := gone.ns.Try("ip", "-d", "link", "show", "type", "vxlan"); strings.TrimSpace(out) != "" {
		t.Fatalf("vxlan devices left after --cleanup:\n%s", out)
	}
	if out := gone.ns.Run(t, "iptables-save"); strings.Contains(out, "FLANNEL") {
		t.Fatalf("host rules left after --cleanup:\n%s", out)
	}
	if _, err := os.Stat(envPath); !os.IsNotExist(err) {
		t.Fatalf("subnet.env left after --cleanup: %v", err)
	}
}

func (o *overlayTest) leaseKey(n *sdNode) string {
	s := o.env(n).Subnet.Masked()
	return fmt.Sprintf("%s/subnets/%s-%d", sdPrefix, s.Addr(), s.Bits())
}

func (o *overlayTest) hasKey(key string) bool {
	out, err := o.etcdCall("/v3/kv/range", map[string]string{"key": b64(key)})
	return err == nil && strings.Contains(out, `"kvs"`)
}

// etcdCall posts to etcd's JSON gateway from inside the underlay namespace.
func (o *overlayTest) etcdCall(path string, body map[string]string) (string, error) {
	b, _ := json.Marshal(body)
	code, out := httpDo(o.ul, sdUnderlay+":2379", "POST", path, b)
	if code != 200 {
		return out, fmt.Errorf("etcd %s: HTTP %d %s", path, code, out)
	}
	return out, nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func httpGet(ns *netnstest.NS, addr, path string) (int, string) {
	return httpDo(ns, addr, "GET", path, nil)
}

// httpDo makes one HTTP/1.0 request from inside ns: the socket is opened on
// the thread that entered the namespace, which an http.Client cannot promise.
func httpDo(ns *netnstest.NS, addr, method, path string, body []byte) (code int, out string) {
	_ = netns.Do(ns.Path, func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", method, path, addr, len(body))
		_, _ = c.Write(body)
		r := bufio.NewReader(c)
		status, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		_, _ = fmt.Sscanf(status, "HTTP/%s %d", new(string), &code)
		rest, _ := io.ReadAll(r)
		if i := bytes.Index(rest, []byte("\r\n\r\n")); i >= 0 {
			rest = rest[i+4:]
		}
		out = string(rest)
		return nil
	})
	return code, out
}
