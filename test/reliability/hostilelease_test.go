package reliability

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostileLeases are keys a subnetd must not route, with what its skip says.
// The node (the daemon fixture plus hostileNode's extras) has ul0 at
// 192.168.76.10/24 with the default route via .254, lan0 at 10.95.60.1/24
// and a static route to 10.95.61.0/24.
var hostileLeases = map[string]struct {
	publicIP, why string
}{
	"192.168.76.0-24":   {"192.168.76.201", "outside the network 10.95.0.0/16"}, // the underlay's subnet
	"192.168.76.254-32": {"192.168.76.202", "outside the network"},              // the default gateway
	"192.168.76.10-32":  {"192.168.76.203", "outside the network"},              // the node's public IP
	"8.8.8.0-24":        {"192.168.76.204", "outside the network"},
	"10.95.30.0-25":     {"192.168.76.205", "is a /25, but the network's subnets are /24"},
	"10.95.60.0-24":     {"192.168.76.206", "holds 10.95.60.1, an address of this node"},
	"10.95.61.0-24":     {"192.168.76.207", "covers this node's route 10.95.61.0/24 via 192.168.76.1 dev ul0"},
	"10.95.62.0-24":     {nodeIP, "public IP 192.168.76.10 is an address of this node"},
}

// hostileNode is the daemon fixture with a default route, a second
// interface inside the cluster network and a static route into it, as a
// node whose underlay overlaps the cluster network has.
func hostileNode(t *testing.T) *daemonNode {
	n := newDaemonNode(t)
	n.ns.Run(t, "ip", "route", "add", "default", "via", "192.168.76.254", "dev", "ul0")
	n.ns.Run(t, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
	n.ns.Run(t, "ip", "addr", "add", "10.95.60.1/24", "dev", "lan0")
	n.ns.Run(t, "ip", "link", "set", "lan0", "up")
	n.ns.Run(t, "ip", "link", "set", "lan1", "up")
	n.ns.Run(t, "ip", "route", "add", "10.95.61.0/24", "via", "192.168.76.1", "dev", "ul0")
	return n
}

// nodeRoutes are the node's own routes, which no lease may take over, and
// the kernel's path to its gateway.
func (n *daemonNode) nodeRoutes() string {
	var out []string
	for _, dst := range []string{"default", "192.168.76.0/24", "10.95.60.0/24", "10.95.61.0/24"} {
		out = append(out, strings.TrimSpace(n.ns.Run(n.t, "ip", "route", "show", dst)))
	}
	out = append(out, strings.TrimSpace(n.ns.Run(n.t, "ip", "-o", "route", "get", "192.168.76.254")))
	return strings.Join(out, "\n")
}

// TestSubnetdHostileLeases: leases whose subnets are not the network's (the
// underlay's subnet, the gateway's /32, the node's address, a public range,
// another subnet length) or that would take over the node's own addresses
// and routes (a subnet holding its second interface's address, covering its
// static route, a lease at its public IP) are never routed: the node's
// routes stay as they were while the valid peers are programmed, each skip
// is logged once with its reason however many reconciles pass, counted in
// the metrics and shown by cnictl leases.
func TestSubnetdHostileLeases(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	n := hostileNode(t)
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	before := n.nodeRoutes()
	i := 0
	for key, l := range hostileLeases {
		i++ // a VTEP MAC each: a shared one would have all but one skipped as colliding
		v, _ := json.Marshal(map[string]any{"PublicIP": l.publicIP, "BackendType": "vxlan", "SubnetdNodeID": "intruder-" + key,
			"BackendData": map[string]any{"VNI": 1, "VtepMAC": fmt.Sprintf("0a:00:00:00:02:%02x", i)}})
		n.etcd("/v3/kv/put", map[string]any{"key": b64(subnetsPrefix + key), "value": b64(string(v))})
	}
	n.putPeer(1)
	sd := n.startSubnetd("subnetd")
	n.eventually("ready", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
	n.eventually("the valid peer routed", 20*time.Second, func() bool { return n.hasRoute(1) })
	n.putPeer(2)
	n.eventually("a later valid peer routed", 20*time.Second, func() bool { return n.hasRoute(2) })
	time.Sleep(3 * time.Second) // three periodic checks (--check-interval 1s), each a full reconcile

	if after := n.nodeRoutes(); after != before {
		t.Errorf("the node's routes changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// subnetd's routes are on nexthop objects, which ip(8) shows as "nhid N".
	got := regexp.MustCompile(` nhid [0-9]+`).ReplaceAllString(strings.TrimSpace(n.ns.Run(t, "ip", "route", "show", "dev", "flannel.1")), "")
	if strings.Count(got, "\n") != 1 || !strings.Contains(got, "10.95.1.0/24 via 10.95.1.0") || !strings.Contains(got, "10.95.2.0/24 via 10.95.2.0") {
		t.Errorf("routes through flannel.1 are not exactly the two valid peers':\n%s", got)
	}
	if fdb := n.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel.1"); strings.Contains(fdb, "0a:00:00:00:02:") {
		t.Errorf("a hostile lease's VTEP is in flannel.1's FDB:\n%s", fdb)
	}
	log := sd.output()
	for key, l := range hostileLeases {
		lines := skipLines(log, key)
		if len(lines) != 1 || !strings.Contains(lines[0], l.why) {
			t.Errorf("lease %s: skip logged %d times (want once, saying %q):\n%s", key, len(lines), l.why, strings.Join(lines, "\n"))
		}
	}
	if _, metrics := n.ns.HTTP("127.0.0.1:9090", "GET", "/metrics", nil); !strings.Contains(metrics, fmt.Sprintf("subnetd_leases_skipped %d\n", len(hostileLeases))) {
		t.Errorf("metrics do not count %d skipped leases:\n%s", len(hostileLeases), metrics)
	}
	n.checkCnictlSkips()
	if sd.exited() || !n.ready("127.0.0.1:9090") {
		t.Fatalf("subnetd died or went unready:\n%s", sd.output())
	}
}

// skipLines are the lines of log that skip the lease key.
func skipLines(log, key string) []string {
	var out []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, "skipping a lease") && strings.Contains(line, "key="+key+" ") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

var buildCnictl = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(binDir), "cnictl")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cnisuite/cni/cmd/cnictl").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building cnictl: %w\n%s", err, out)
	}
	return bin, nil
})

// checkCnictlSkips: cnictl leases, run in the node, says for each hostile
// lease that subnetd skips it, and why.
func (n *daemonNode) checkCnictlSkips() {
	n.t.Helper()
	bin, err := buildCnictl()
	if err != nil {
		n.t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", n.ns.Name, bin, "leases", "--json", "--etcd-endpoints", "http://127.0.0.1:2379",
		"--subnet-file", filepath.Join(n.dir, "subnet.env"), "--node-id-file", filepath.Join(n.dir, "none")).Output()
	var rows []struct{ Key, Kernel string }
	if jerr := json.Unmarshal(out, &rows); err != nil || jerr != nil {
		n.t.Fatalf("cnictl leases: %v %v\n%s", err, jerr, out)
	}
	kernel := map[string]string{}
	for _, r := range rows {
		kernel[r.Key] = r.Kernel
	}
	for key, l := range hostileLeases {
		if got := kernel[key]; !strings.HasPrefix(got, "skipped: ") || !strings.Contains(got, l.why) {
			n.t.Errorf("cnictl leases: %s is %q, want skipped saying %q", key, got, l.why)
		}
	}
	if kernel["10.95.1.0-24"] != "ok" {
		n.t.Errorf("cnictl leases: the valid peer is %q, want ok", kernel["10.95.1.0-24"])
	}
}

// TestSubnetdSingleInstance: a second subnetd with the same --data-dir (its
// own health port, so that nothing else stops it) exits 1 within seconds
// naming the lock file and the running one's PID, and so does
// --cleanup; neither touches subnet.env or flannel.1, and the first keeps
// serving. Once the first has stopped, the next one starts.
func TestSubnetdSingleInstance(t *testing.T) {
	n := newDaemonNode(t)
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	n.putPeer(1)
	sd := n.startSubnetd("subnetd")
	n.eventually("ready", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
	n.eventually("the peer routed", 20*time.Second, func() bool { return n.hasRoute(1) })
	envPath := filepath.Join(n.dir, "subnet.env")
	envBefore, statBefore := readEnv(t, envPath)
	devBefore := n.ns.Run(t, "ip", "-o", "link", "show", "flannel.1")
	lock := filepath.Join(n.dir, "sd", "subnetd.lock")

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"subnetd-second", []string{"--healthz-port", "9091"}, "another subnetd is running"},
		{"subnetd-cleanup", []string{"--cleanup"}, "--cleanup refused"},
	} {
		start := time.Now()
		p := n.startSubnetd(c.name, c.args...)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still runs after 10 s beside the first:\n%s", c.name, p.output())
		}
		out := p.output()
		if code := p.cmd.ProcessState.ExitCode(); code != 1 {
			t.Errorf("%s: exit %d, want 1:\n%s", c.name, code, out)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s took %v to give up", c.name, took)
		}
		if pid := fmt.Sprintf("(PID %d)", sd.cmd.Process.Pid); !strings.Contains(out, c.want) || !strings.Contains(out, lock) || !strings.Contains(out, pid) {
			t.Errorf("%s: the message does not say %q naming %s and %s:\n%s", c.name, c.want, lock, pid, out)
		}
	}

	if env, st := readEnv(t, envPath); env != envBefore || !st.ModTime().Equal(statBefore.ModTime()) {
		t.Errorf("subnet.env was rewritten")
	}
	if dev := n.ns.Run(t, "ip", "-o", "link", "show", "flannel.1"); strings.Fields(dev)[0] != strings.Fields(devBefore)[0] {
		t.Errorf("flannel.1 was recreated: %s, was %s", dev, devBefore)
	}
	n.putPeer(2)
	n.eventually("the first still programming peers", 20*time.Second, func() bool { return n.hasRoute(2) })
	if sd.exited() || !n.ready("127.0.0.1:9090") {
		t.Fatalf("the first subnetd died or went unready:\n%s", sd.output())
	}

	sd.stop()
	next := n.startSubnetd("subnetd-next")
	n.eventually("the next subnetd ready once the first stopped", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
	if next.exited() {
		t.Fatalf("the next subnetd exited:\n%s", next.output())
	}
}

func readEnv(t *testing.T, path string) (string, os.FileInfo) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), st
}
