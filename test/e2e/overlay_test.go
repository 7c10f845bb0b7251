package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/proc"
	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// The shared fixture of the overlay tests (subnetd alone, subnetd with
// flanneld): nodes are namespaces joined by a bridge in an underlay
// namespace, where an etcd server process runs. The addresses live only
// inside the namespaces the tests create.
const (
	sdUnderlay   = "192.168.77.1" // the underlay's bridge and etcd
	sdUnderlayV6 = "fd77::1"      // and its IPv6 address, for dual-stack overlays
	sdEtcdURL    = "http://" + sdUnderlay + ":2379"
)

// sdNode is a node namespace running a lease daemon (subnetd or flanneld),
// with one pod.
type sdNode struct {
	name  string
	ns    *netnstest.NS
	dir   string
	ip    string
	ip6   string // on dual-stack overlays
	log   string // the daemon's log file
	proc  *exec.Cmd
	pod   *netnstest.NS
	podIP string
	pod6  string // the pod's IPv6 address on dual-stack overlays
	// cniPath is where the node's runtime finds the plugins; "" is binDir.
	cniPath string
}

func (n *sdNode) envPath() string { return filepath.Join(n.dir, "subnet.env") }

// overlayTest is one overlay: its underlay, etcd and nodes, all removed when
// the test ends.
type overlayTest struct {
	t       *testing.T
	dir     string
	etcdBin string
	subnetd string
	prefix  string // the etcd prefix of the network config and leases
	netConf string // net-conf.json given to subnetd with --net-config
	v6      bool   // the network is dual-stack
	vni     int    // the vxlan backend's VNI and UDP port
	port    int
	ul      *netnstest.NS
	etcd    *exec.Cmd
	nodes   []*sdNode
}

// newOverlay builds subnetd, makes the underlay and starts etcd in it.
func newOverlay(t *testing.T, prefix, network string) *overlayTest {
	netnstest.SkipUnlessRoot(t)
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("needs etcd (Debian's etcd-server; make deps installs it)")
	}
	o := newUnderlay(t, network)
	o.etcdBin, o.prefix = etcdBin, prefix
	o.startEtcd()
	return o
}

// newUnderlay writes the network config and makes the underlay, with
// nothing running in it.
func newUnderlay(t *testing.T, network string) *overlayTest {
	netnstest.SkipUnlessRoot(t)
	cfg, err := subnet.ParseConfig([]byte(network))
	if err != nil {
		t.Fatal(err)
	}
	o := &overlayTest{t: t, dir: t.TempDir(), v6: cfg.EnableIPv6, vni: cfg.Backend.VNI, port: cfg.Backend.Port}
	o.subnetd = filepath.Join(daemonDir(), "subnetd")
	o.netConf = filepath.Join(o.dir, "net-conf.json")
	if err := os.WriteFile(o.netConf, []byte(network), 0o644); err != nil {
		t.Fatal(err)
	}
	o.ul = netnstest.New(t, "sd-ul")
	o.ul.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	o.ul.Run(t, "ip", "addr", "add", sdUnderlay+"/24", "dev", "br0")
	if o.v6 {
		o.ul.Run(t, "ip", "addr", "add", sdUnderlayV6+"/64", "dev", "br0", "nodad")
	}
	o.ul.Run(t, "ip", "link", "set", "br0", "up")
	return o
}

func (o *overlayTest) startEtcd() {
	o.t.Helper()
	o.etcd = o.spawn(o.ul, filepath.Join(o.dir, "etcd.log"), o.etcdBin, "--data-dir", filepath.Join(o.dir, "etcd"),
		"--listen-client-urls", sdEtcdURL, "--advertise-client-urls", sdEtcdURL,
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
func stop(cmd *exec.Cmd) { proc.Stop(cmd, 10*time.Second) }

// addNode makes node i: a namespace with eth0 on the underlay at
// 192.168.77.(10+i) (and fd77::(10+i) on dual-stack overlays) and
// forwarding on. No daemon runs in it yet.
func (o *overlayTest) addNode(i int) *sdNode {
	t := o.t
	n := &sdNode{name: fmt.Sprintf("node%d", i), ns: netnstest.New(t, "sd-n"), dir: filepath.Join(o.dir, fmt.Sprintf("node%d", i)),
		ip: fmt.Sprintf("192.168.77.%d", 10+i)}
	peer := fmt.Sprintf("sdv%d", i)
	o.ul.Run(t, "ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", n.ns.Name)
	o.ul.Run(t, "ip", "link", "set", peer, "master", "br0", "up")
	n.ns.Run(t, "ip", "addr", "add", n.ip+"/24", "dev", "eth0")
	if o.v6 {
		n.ip6 = fmt.Sprintf("fd77::%d", 10+i)
		n.ns.Run(t, "ip", "addr", "add", n.ip6+"/64", "dev", "eth0", "nodad")
		n.ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	}
	n.ns.Run(t, "ip", "link", "set", "eth0", "up")
	n.ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	o.nodes = append(o.nodes, n)
	return n
}

// startSubnetd runs subnetd on n against the underlay's etcd; wrap (e.g.
// hideIPTables) is put before its command line, extra after.
func (o *overlayTest) startSubnetd(n *sdNode, wrap []string, extra ...string) {
	n.log = filepath.Join(n.dir, "subnetd.log")
	argv := slices.Concat(wrap, []string{o.subnetd,
		"--etcd-endpoints", sdEtcdURL, "--etcd-prefix", o.prefix, "--iface", "eth0",
		"--net-config", o.netConf, "--subnet-file", n.envPath(),
		"--data-dir", n.dir, "--node-id", n.name, "--healthz-ip", "127.0.0.1", "--healthz-port", "9090",
		"--ip-masq", "--check-interval", "1s", "--etcd-timeout", "1s", "--lease-ttl", "10m", "--subnet-lease-renew-margin", "5"}, extra)
	n.proc = o.spawn(n.ns, n.log, argv...)
}

// waitReady waits for subnetd's /readyz on n.
func (o *overlayTest) waitReady(n *sdNode) {
	o.eventually(n.name+" ready", 20*time.Second, func() bool {
		code, _ := n.ns.HTTP("127.0.0.1:9090", "GET", "/readyz", nil)
		return code == 200
	})
}

func (o *overlayTest) env(n *sdNode) envfile.Env {
	o.t.Helper()
	e, err := envfile.Read(n.envPath())
	if err != nil {
		o.t.Fatalf("%s: %v", n.name, err)
	}
	return e
}

// addPod runs our bridge (with host-local) in the node for a new pod, on the
// subnets of the node's subnet.env, as the flannel plugin will.
func (o *overlayTest) addPod(n *sdNode) {
	t := o.t
	e := o.env(n)
	n.pod = netnstest.New(t, "sd-p")
	ranges := fmt.Sprintf(`[[{"subnet":%q}]]`, e.Subnet.Masked())
	routes := fmt.Sprintf(`[{"dst":%q}]`, e.Network)
	if o.v6 {
		ranges = fmt.Sprintf(`[[{"subnet":%q}],[{"subnet":%q}]]`, e.Subnet.Masked(), e.IPv6Subnet.Masked())
		routes = fmt.Sprintf(`[{"dst":%q},{"dst":%q}]`, e.Network, e.IPv6Network)
	}
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"sd-e2e","type":"bridge","bridge":"cni0","isGateway":true,"mtu":%d,
		"ipam":{"type":"host-local","ranges":%s,"routes":%s,"dataDir":%q}}`,
		e.MTU, ranges, routes, filepath.Join(n.dir, "ipam"))
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
	for _, ip := range res.IPs {
		if a := netip.MustParsePrefix(ip.Address).Addr(); a.Is4() {
			n.podIP = a.String()
		} else {
			n.pod6 = a.String()
		}
	}
	if o.v6 && n.pod6 == "" {
		t.Fatalf("bridge result %s: no IPv6 address on a dual-stack network", out.stdout)
	}
	if o.v6 {
		// While cni0's link-local address is in DAD (~1.5 s after the bridge
		// first gets a port), the kernel drops IPv6 forwarded to pods: its
		// neighbour solicitations for them go unanswered. That is the
		// node's bridge settling, not the overlay under test.
		o.eventually(n.name+"'s cni0 out of DAD", 10*time.Second, func() bool {
			out, err := n.ns.Try("ip", "-6", "addr", "show", "dev", "cni0", "tentative")
			return err == nil && strings.TrimSpace(out) == ""
		})
	}
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
	for _, ip := range []string{to.podIP, to.pod6} {
		if ip == "" {
			continue
		}
		// -w keeps sending until one reply or the deadline: the first packet
		// of a new path may be lost while the pods' ARP/ND settle.
		if out, err := from.pod.Try("ping", "-c", "1", "-i", "0.2", "-w", "5", ip); err != nil {
			o.t.Fatalf("pod on %s -> pod on %s (%s): %v\n%s\n%s", from.name, to.name, ip, err, out, o.logs())
		}
	}
}

// logs is the end of every node's daemon log, for failure messages.
func (o *overlayTest) logs() string {
	var b strings.Builder
	for _, n := range o.nodes {
		data, _ := os.ReadFile(n.log)
		fmt.Fprintf(&b, "--- %s %s (last lines)\n%s\n", n.name, filepath.Base(n.log), tail(string(data), 15))
		fmt.Fprintf(&b, "--- %s network\n%s", n.name, netState(n.ns))
	}
	fmt.Fprintf(&b, "--- underlay network\n%s", netState(o.ul))
	return b.String()
}

// netState is what a namespace's addresses, routes, neighbours and bridge
// ports looked like, for a failure's report (a node once could not reach
// the underlay's etcd for 20 s in a full run, and never alone).
func netState(ns *netnstest.NS) string {
	var b strings.Builder
	for _, args := range [][]string{{"ip", "-br", "addr"}, {"ip", "route"}, {"ip", "neigh"}, {"bridge", "link"}} {
		out, err := ns.Try(args...)
		fmt.Fprintf(&b, "$ %s (%v)\n%s", strings.Join(args, " "), err, out)
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

// devNames are flannel's names of a node's vxlan devices, by family.
var devNames = [2]string{family.IPv4: "flannel.%d", family.IPv6: "flannel-v6.%d"}

// dev is the name of a node's vxlan device of family f, flannel's.
func (o *overlayTest) dev(f family.Family) string { return fmt.Sprintf(devNames[f], o.vni) }

// leaseKey is the key of n's lease, from its subnet.env.
func (o *overlayTest) leaseKey(n *sdNode) string {
	e := o.env(n)
	return o.prefix + "/subnets/" + subnet.Subnets{V4: e.Subnet.Masked(), V6: e.IPv6Subnet.Masked()}.Key()
}

func (o *overlayTest) hasKey(key string) bool {
	out, err := o.etcdCall("/v3/kv/range", map[string]string{"key": b64(key)})
	return err == nil && strings.Contains(out, `"kvs"`)
}

// etcdKV is one key as etcd's JSON gateway returns it.
type etcdKV struct {
	Key, Value                  string // decoded
	CreateRevision, ModRevision int64
	Lease                       int64
}

// leases reads every key under <prefix>/subnets/.
func (o *overlayTest) leases() map[string]etcdKV {
	o.t.Helper()
	from := o.prefix + "/subnets/"
	end := from[:len(from)-1] + "0" // the first key after the directory
	out, err := o.etcdCall("/v3/kv/range", map[string]string{"key": b64(from), "range_end": b64(end)})
	if err != nil {
		o.t.Fatal(err)
	}
	var resp struct {
		Kvs []struct {
			Key, Value     string
			CreateRevision int64 `json:"create_revision,string"`
			ModRevision    int64 `json:"mod_revision,string"`
			Lease          int64 `json:"lease,string"`
		}
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		o.t.Fatalf("etcd range %s: %v", out, err)
	}
	m := map[string]etcdKV{}
	for _, kv := range resp.Kvs {
		k, _ := base64.StdEncoding.DecodeString(kv.Key)
		v, _ := base64.StdEncoding.DecodeString(kv.Value)
		m[string(k)] = etcdKV{Key: string(k), Value: string(v), CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Lease: kv.Lease}
	}
	return m
}

// etcdCall posts to etcd's JSON gateway from inside the underlay namespace.
func (o *overlayTest) etcdCall(path string, body map[string]string) (string, error) {
	b, _ := json.Marshal(body)
	code, out := o.ul.HTTP(sdUnderlay+":2379", "POST", path, b)
	if code != 200 {
		return out, fmt.Errorf("etcd %s: HTTP %d %s", path, code, out)
	}
	return out, nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
