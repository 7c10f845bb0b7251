package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestSubnetdOverlay: three nodes joined by an underlay, an etcd server in
// the underlay, subnetd on each node, a pod per node made by our bridge and
// host-local from the node's subnet.env; every pod reaches every other pod,
// also through a restart of subnetd, an etcd outage, a deleted lease key and
// a deleted vxlan device, and a removed node's routes go from its peers.
func TestSubnetdOverlay(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	o := newOverlay(t, "/e2e/network", `{"Network":"10.250.0.0/16","Backend":{"Type":"vxlan"}}`)
	for i := 1; i <= 3; i++ {
		o.startSubnetd(o.addNode(i), nil)
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
	t.Run("etcd outage", func(t *testing.T) { o.etcdOutage(t) })
	t.Run("deleted lease key", func(t *testing.T) { o.deleteLease(t) })
	t.Run("deleted vxlan device", func(t *testing.T) { o.deleteDevice(t) })
	t.Run("removed node", func(t *testing.T) { o.removeNode(t) })
}

// restart: subnetd stopped and started on a node keeps its subnet, and the
// pods never lose connectivity (the data plane stays while it is down).
func (o *overlayTest) restart(t *testing.T) {
	n := o.nodes[0]
	before := o.env(n)
	stop(n.proc)
	o.ping(n, o.nodes[1])
	o.ping(o.nodes[2], n)
	o.startSubnetd(n, nil)
	o.waitReady(n)
	if after := o.env(n); after != before {
		t.Fatalf("subnet.env changed across a restart: %+v -> %+v", before, after)
	}
	o.pingAll()
}

// etcdOutage: with etcd gone for 30 s the pods still reach each other,
// /readyz says not ready, and every node is ready again after.
func (o *overlayTest) etcdOutage(t *testing.T) {
	stop(o.etcd)
	start := time.Now()
	for _, n := range o.nodes {
		o.eventually(n.name+" not ready", 10*time.Second, func() bool {
			code, _ := n.ns.HTTP("127.0.0.1:9090", "GET", "/readyz", nil)
			return code == 503
		})
	}
	for time.Since(start) < 30*time.Second {
		o.pingAll()
		time.Sleep(2 * time.Second)
	}
	o.startEtcd()
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
	envPath := gone.envPath()
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

// TestSubnetdEmbeddedEtcd: subnetd without --etcd-endpoints runs its
// embedded etcd, subnetd-etcd installed next to it, as a child: the node
// gets a lease and its overlay device, and stopping subnetd stops the child.
func TestSubnetdEmbeddedEtcd(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	dir := t.TempDir()
	node := netnstest.New(t, "sd-emb")
	node.Run(t, "ip", "link", "add", "eth0", "type", "bridge")
	node.Run(t, "ip", "addr", "add", "192.168.76.11/24", "dev", "eth0")
	node.Run(t, "ip", "link", "set", "eth0", "up")
	netConf := filepath.Join(dir, "net-conf.json")
	if err := os.WriteFile(netConf, []byte(`{"Network":"10.249.0.0/16","Backend":{"Type":"vxlan"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	o := &overlayTest{t: t, dir: dir}
	n := &sdNode{name: "node1", ns: node, dir: dir, log: filepath.Join(dir, "subnetd.log")}
	o.nodes = []*sdNode{n}
	n.proc = o.spawn(node, n.log, filepath.Join(daemonDir(), "subnetd"), "--iface", "eth0", "--net-config", netConf,
		"--subnet-file", n.envPath(), "--data-dir", filepath.Join(dir, "data"), "--node-id", n.name,
		"--healthz-ip", "127.0.0.1", "--healthz-port", "9090")
	o.waitReady(n)
	if e := o.env(n); !netip.MustParsePrefix("10.249.0.0/16").Contains(e.Subnet.Addr()) {
		t.Fatalf("subnet.env %+v: want a subnet of 10.249.0.0/16", e)
	}
	node.Run(t, "ip", "link", "show", "flannel.1")
	// Each thread lists the children it forked; iptables-save and -restore,
	// run for the host rules, come and go beside the one subnetd-etcd.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", n.proc.Process.Pid))
	var etcds []string
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, pid := range strings.Fields(string(b)) {
			if comm, _ := os.ReadFile("/proc/" + pid + "/comm"); strings.TrimSpace(string(comm)) == "subnetd-etcd" {
				etcds = append(etcds, pid)
			}
		}
	}
	if len(etcds) != 1 {
		t.Fatalf("subnetd's subnetd-etcd children %q: want one", etcds)
	}
	child := etcds[0]
	stop(n.proc)
	if code := n.proc.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("subnetd exited with %d\n%s", code, o.logs())
	}
	o.eventually("subnetd-etcd gone", 10*time.Second, func() bool {
		_, err := os.Stat("/proc/" + child)
		return os.IsNotExist(err)
	})
}
