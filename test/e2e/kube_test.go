package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kubetest "github.com/cnisuite/cni/test/kube"
)

// The Kubernetes API mode's overlay: the overlay tests' underlay and node
// namespaces, with test/kube's control plane in the underlay (its API
// server on the bridge's address) instead of etcd, every node a Node
// object, subnetd in --kube-subnet-mgr mode on each.
const (
	kubeNet = `{"Network":"10.252.0.0/16","Backend":{"Type":"vxlan"}}`
	ann     = "flannel.alpha.coreos.com/"
)

type kubeOverlay struct {
	*overlayTest
	cluster *kubetest.Cluster
}

// newKubeOverlay starts the control plane; with cluster CIDRs,
// kube-controller-manager gives every Node a pod CIDR.
func newKubeOverlay(t *testing.T, network string, clusterCIDRs ...string) *kubeOverlay {
	o := newUnderlay(t, network)
	c := kubetest.Start(t, kubetest.Options{NS: o.ul, Address: sdUnderlay, ClusterCIDRs: clusterCIDRs})
	return &kubeOverlay{overlayTest: o, cluster: c}
}

// addKubeNode makes node i and registers its Node.
func (k *kubeOverlay) addKubeNode(i int) *sdNode {
	n := k.addNode(i)
	k.cluster.CreateNode(k.t, n.name)
	return n
}

// startKubeSubnetd runs subnetd on n in the Kubernetes API mode, as Node
// n.name, with the admin kubeconfig.
func (k *kubeOverlay) startKubeSubnetd(n *sdNode) {
	n.log = filepath.Join(n.dir, "subnetd.log")
	n.proc = k.spawn(n.ns, n.log, "env", "NODE_NAME="+n.name, k.subnetd, "--kube-subnet-mgr",
		"--kubeconfig-file", k.cluster.Kubeconfig, "--net-config-path", k.netConf, "--iface", "eth0",
		"--subnet-file", n.envPath(), "--data-dir", n.dir, "--healthz-ip", "127.0.0.1", "--healthz-port", "9090",
		"--ip-masq", "--check-interval", "1s", "--etcd-timeout", "2s")
}

func readyz(n *sdNode) (int, string) { return n.ns.HTTP("127.0.0.1:9090", "GET", "/readyz", nil) }

// podCIDR is the Node's IPv4 pod CIDR.
func (k *kubeOverlay) podCIDR(n *sdNode) netip.Prefix {
	return netip.MustParsePrefix(k.cluster.WaitPodCIDRs(k.t, n.name, 1)[0])
}

// addPods attaches a pod to every node through the flannel conflist, for
// the overlay tests' ping helpers.
func (k *kubeOverlay) addPods() {
	for _, n := range k.nodes {
		p := k.addFlannelPod(n, nil)
		n.pod, n.podIP = p.ns, addrsOf(p.res)[0]
	}
}

// TestKubeOverlay: three nodes registered as Nodes, pod CIDRs from
// kube-controller-manager, subnetd in the Kubernetes API mode on each:
// subnet.env from the Node's pod CIDR, flanneld's annotations and
// condition on every Node, a route, neighbour and FDB entry for every peer,
// pods on the flannel conflist reaching each other; peers with bad or no
// annotations skipped; an API server outage of 30 s survived; a peer
// deleted while subnetd was stopped unprogrammed when it starts.
func TestKubeOverlay(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	k := newKubeOverlay(t, kubeNet, "10.252.0.0/16")
	for i := 1; i <= 3; i++ {
		k.addKubeNode(i)
	}
	for _, n := range k.nodes {
		k.startKubeSubnetd(n)
	}
	for _, n := range k.nodes {
		k.waitReady(n)
		cidr := k.podCIDR(n)
		if e := k.env(n); e.Subnet.Masked() != cidr || e.Network != netip.MustParsePrefix("10.252.0.0/16") {
			t.Fatalf("%s: subnet.env %+v, want its Node's pod CIDR %s", n.name, e, cidr)
		}
		k.checkPublished(n)
	}
	for _, n := range k.nodes {
		k.checkPeers(n, k.nodes)
	}
	k.addPods()
	k.pingAll()

	t.Run("peers with bad or no annotations", func(t *testing.T) { k.badPeers(t) })
	t.Run("API server outage", func(t *testing.T) { k.apiOutage(t) })
	t.Run("peer deleted while stopped", func(t *testing.T) { k.deletedWhileStopped(t) })
}

// TestKubeDualStack: on a dual-stack network every Node gets an IPv4 and
// an IPv6 pod CIDR from kube-controller-manager; subnetd writes both into
// subnet.env, publishes flanneld's IPv6 annotations (public-ipv6,
// backend-v6-data with flannel-v6.1's MAC) and pods reach each other over
// both families.
func TestKubeDualStack(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	const dual = `{"Network":"10.253.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:253::/56","Backend":{"Type":"vxlan"}}`
	k := newKubeOverlay(t, dual, "10.253.0.0/16", "fd00:10:253::/56")
	for i := 1; i <= 2; i++ {
		k.startKubeSubnetd(k.addKubeNode(i))
	}
	for _, n := range k.nodes {
		k.waitReady(n)
		cidrs := k.cluster.WaitPodCIDRs(t, n.name, 2)
		if e := k.env(n); e.Subnet.Masked().String() != cidrs[0] || e.IPv6Subnet.Masked().String() != cidrs[1] {
			t.Fatalf("%s: subnet.env %+v, want its Node's pod CIDRs %v", n.name, e, cidrs)
		}
		node, err := k.cluster.Client.CoreV1().Nodes().Get(t.Context(), n.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mac := strings.TrimSpace(n.ns.Run(t, "cat", "/sys/class/net/flannel-v6.1/address"))
		if got, want := node.Annotations[ann+"backend-v6-data"], fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac); got != want || node.Annotations[ann+"public-ipv6"] != n.ip6 {
			t.Fatalf("%s: backend-v6-data %q, public-ipv6 %q; want %q, %q", n.name, got, node.Annotations[ann+"public-ipv6"], want, n.ip6)
		}
	}
	for _, n := range k.nodes {
		k.addPod(n)
	}
	k.pingAll()
}

// checkPublished: n's Node carries flanneld's annotations for it (its
// address, flannel.1's MAC) and NetworkUnavailable False.
func (k *kubeOverlay) checkPublished(n *sdNode) {
	t := k.t
	node, err := k.cluster.Client.CoreV1().Nodes().Get(t.Context(), n.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mac := strings.TrimSpace(n.ns.Run(t, "cat", "/sys/class/net/flannel.1/address"))
	want := map[string]string{ann + "kube-subnet-manager": "true", ann + "backend-type": "vxlan", ann + "public-ip": n.ip,
		ann + "backend-data": fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac)}
	for key, v := range want {
		if node.Annotations[key] != v {
			t.Errorf("%s: annotation %s = %q, want %q", n.name, key, node.Annotations[key], v)
		}
	}
	var cond *corev1.NodeCondition
	for i, c := range node.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			cond = &node.Status.Conditions[i]
		}
	}
	if cond == nil || cond.Status != corev1.ConditionFalse || cond.Reason != "SubnetdIsUp" {
		t.Errorf("%s: conditions %+v, want NetworkUnavailable False", n.name, node.Status.Conditions)
	}
}

// checkPeers: n routes every other node's pod CIDR via flannel.1 onlink,
// with a permanent neighbour and FDB entry from its annotations. subnetd's
// routes go through nexthop objects, which ip(8) shows as "nhid N".
func (k *kubeOverlay) checkPeers(n *sdNode, peers []*sdNode) {
	t := k.t
	k.eventually(n.name+"'s peers programmed", 10*time.Second, func() bool {
		routes := nhid.ReplaceAllString(n.ns.Run(t, "ip", "route", "show", "dev", "flannel.1"), "")
		neigh := n.ns.Run(t, "ip", "neigh", "show", "dev", "flannel.1")
		fdb := n.ns.Run(t, "bridge", "fdb", "show", "dev", "flannel.1")
		for _, p := range peers {
			if p == n {
				continue
			}
			cidr := k.podCIDR(p)
			mac := strings.TrimSpace(p.ns.Run(t, "cat", "/sys/class/net/flannel.1/address"))
			if !hasLine(routes, cidr.String()+" via "+cidr.Addr().String()+" ", " onlink") ||
				!hasLine(neigh, cidr.Addr().String()+" lladdr "+mac+" ", " PERMANENT") ||
				!hasLine(fdb, mac+" dst "+p.ip+" ", " permanent") {
				return false
			}
		}
		return true
	})
}

var nhid = regexp.MustCompile(` nhid [0-9]+`)

// hasLine reports whether a line of out starts with prefix and holds word.
func hasLine(out, prefix, word string) bool {
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, prefix) && strings.Contains(strings.TrimSpace(line)+" ", word+" ") {
			return true
		}
	}
	return false
}

// badPeers: Nodes that publish a malformed address, or set
// kube-subnet-manager and nothing else, are skipped with one log line per
// change of them on every node; no crash, no route, traffic unchanged.
func (k *kubeOverlay) badPeers(t *testing.T) {
	bad := map[string]map[string]string{
		"bad-ip": {ann + "kube-subnet-manager": "true", ann + "backend-type": "vxlan", ann + "public-ip": "not-an-ip",
			ann + "backend-data": `{"VNI":1,"VtepMAC":"0a:00:00:00:00:99"}`},
		"bare": {ann + "kube-subnet-manager": "true"},
	}
	for name, a := range bad {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: a}}
		if _, err := k.cluster.Client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		k.cluster.WaitPodCIDRs(t, name, 1)
	}
	label := []byte(`{"metadata":{"labels":{"unrelated":"change"}}}`)
	if _, err := k.cluster.Client.CoreV1().Nodes().Patch(t.Context(), "bad-ip", types.MergePatchType, label, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range k.nodes {
		k.eventually(n.name+" logs both skips", 10*time.Second, func() bool {
			log := k.nodeLog(n)
			return strings.Contains(log, "node=bad-ip") && strings.Contains(log, "node=bare")
		})
	}
	time.Sleep(2 * time.Second) // the label's event, and some checks
	for _, n := range k.nodes {
		if c := strings.Count(k.nodeLog(n), `msg="skipping a node's lease" node=bad-ip`); c != 1 {
			t.Errorf("%s logged bad-ip's skip %d times, want once:\n%s", n.name, c, k.logs())
		}
		if code, body := readyz(n); code != 200 || n.proc.ProcessState != nil {
			t.Errorf("%s with bad peers: readyz %d %s, exited %v", n.name, code, body, n.proc.ProcessState)
		}
		if routes := n.ns.Run(t, "ip", "route", "show", "dev", "flannel.1"); strings.Count(routes, "\n") != len(k.nodes)-1 {
			t.Errorf("%s routes more than its peers:\n%s", n.name, routes)
		}
	}
	k.pingAll()
	for name := range bad {
		k.cluster.DeleteNode(t, name)
	}
}

func (k *kubeOverlay) nodeLog(n *sdNode) string {
	b, err := os.ReadFile(n.log)
	if err != nil {
		k.t.Fatal(err)
	}
	return string(b)
}

// apiOutage: with the API server stopped for 30 s the pods keep reaching
// each other and every node reports not ready, naming the Kubernetes API;
// all are ready again once it is back.
func (k *kubeOverlay) apiOutage(t *testing.T) {
	k.cluster.StopAPIServer(t)
	start := time.Now()
	for _, n := range k.nodes {
		k.eventually(n.name+" not ready", 15*time.Second, func() bool {
			code, body := readyz(n)
			return code == 503 && strings.Contains(body, "the Kubernetes API not reached")
		})
	}
	for time.Since(start) < 30*time.Second {
		k.pingAll()
		time.Sleep(2 * time.Second)
	}
	k.cluster.StartAPIServer(t)
	back := time.Now()
	for _, n := range k.nodes {
		// Its list and watch calls are retried at most 5 s apart.
		k.eventually(n.name+" ready after the outage", 15*time.Second, func() bool {
			code, _ := readyz(n)
			return code == 200
		})
		if log := k.nodeLog(n); !strings.Contains(log, "the Kubernetes API unreachable") || strings.Contains(log, "etcd") {
			t.Errorf("%s's log does not name the Kubernetes API, or names etcd:\n%s", n.name, log)
		}
	}
	t.Logf("every node ready %v after the API server", time.Since(back).Round(100*time.Millisecond))
	k.pingAll()
}

// deletedWhileStopped: node3's Node is deleted while subnetd is stopped on
// node1 (and on node3): node2 drops node3 at once, node1 when its subnetd
// starts again, and node1 and node2 still reach each other.
func (k *kubeOverlay) deletedWhileStopped(t *testing.T) {
	n1, n2, n3 := k.nodes[0], k.nodes[1], k.nodes[2]
	gone := k.podCIDR(n3).String()
	stop(n1.proc)
	stop(n3.proc)
	k.cluster.DeleteNode(t, n3.name)
	dropped := func(n *sdNode) func() bool {
		return func() bool {
			out, err := n.ns.Try("ip", "route", "show", gone)
			return err == nil && strings.TrimSpace(out) == ""
		}
	}
	k.eventually(n2.name+" drops the deleted node", 10*time.Second, dropped(n2))
	if dropped(n1)() {
		t.Fatalf("%s dropped %s while its subnetd was stopped", n1.name, gone)
	}
	k.startKubeSubnetd(n1)
	k.waitReady(n1)
	k.eventually(n1.name+" drops the deleted node once started", 10*time.Second, dropped(n1))
	k.ping(n1, n2)
	k.ping(n2, n1)
}

// TestKubeNotAssigned: a Node without a pod CIDR (no
// kube-controller-manager here) keeps subnetd alive and unready, /readyz
// saying why, one log line naming the node and the fixes; it is ready
// within 2 s of a patch assigning one. A pod CIDR outside the network is
// reported the same way, not a crash.
func TestKubeNotAssigned(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	k := newKubeOverlay(t, kubeNet)
	n1, n2 := k.addKubeNode(1), k.addKubeNode(2)
	k.startKubeSubnetd(n1)
	k.eventually("node1 unready, saying why", 20*time.Second, func() bool {
		code, body := readyz(n1)
		return code == 503 && strings.Contains(body, `no valid lease: node "node1" pod cidr not assigned`)
	})
	time.Sleep(3 * time.Second) // a dozen retries
	log := k.nodeLog(n1)
	if c := strings.Count(log, "pod cidr not assigned"); c != 1 {
		t.Errorf("the unassigned state logged %d times, want once:\n%s", c, log)
	}
	for _, fix := range []string{"kubeadm init --pod-network-cidr=10.252.0.0/16", "--allocate-node-cidrs=true --cluster-cidr=10.252.0.0/16", "kubectl patch node node1"} {
		if !strings.Contains(log, fix) {
			t.Errorf("the log line does not give the fix %q:\n%s", fix, log)
		}
	}

	k.cluster.SetPodCIDRs(t, n1.name, "10.252.9.0/24")
	assigned := time.Now()
	for code, _ := readyz(n1); code != 200; code, _ = readyz(n1) {
		if time.Since(assigned) > 2*time.Second {
			t.Fatalf("not ready 2 s after the pod CIDR was assigned\n%s", k.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ready %v after the assignment", time.Since(assigned).Round(time.Millisecond))
	if e := k.env(n1); e.Subnet != netip.MustParsePrefix("10.252.9.1/24") {
		t.Errorf("subnet.env %+v after the assignment", e)
	}

	k.cluster.SetPodCIDRs(t, n2.name, "10.99.0.0/24")
	k.startKubeSubnetd(n2)
	k.eventually("node2 unready, saying why", 20*time.Second, func() bool {
		code, body := readyz(n2)
		return code == 503 && strings.Contains(body, "pod CIDR 10.99.0.0/24 is outside the network 10.252.0.0/16")
	})
	if n2.proc.ProcessState != nil {
		t.Errorf("subnetd exited on a pod CIDR outside the network:\n%s", k.logs())
	}
	node, err := k.cluster.Client.CoreV1().Nodes().Get(t.Context(), n2.name, metav1.GetOptions{})
	if err != nil || node.Annotations[ann+"kube-subnet-manager"] != "" {
		t.Errorf("node2 published a lease it cannot hold: %v %v", node.Annotations, err)
	}
}

// TestKubeFlanneldInterop: flanneld with --kube-subnet-mgr on one node,
// subnetd on two others, one cluster: each reads the other's annotations
// and programs its peers, and pods on all three reach each other, also
// after subnetd restarts.
func TestKubeFlanneldInterop(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	k := newKubeOverlay(t, kubeNet, "10.252.0.0/16")
	bin := flanneld(t)
	for i := 1; i <= 3; i++ {
		k.addKubeNode(i)
	}
	fl := k.nodes[2]
	// kubelet registers a Node with annotations; flanneld panics on one
	// without ("assignment to entry in nil map").
	ttl := []byte(`{"metadata":{"annotations":{"node.alpha.kubernetes.io/ttl":"0"}}}`)
	if _, err := k.cluster.Client.CoreV1().Nodes().Patch(t.Context(), fl.name, types.MergePatchType, ttl, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	k.startKubeSubnetd(k.nodes[0])
	k.startKubeSubnetd(k.nodes[1])
	fl.log = filepath.Join(fl.dir, "flanneld.log")
	fl.proc = k.spawn(fl.ns, fl.log, "env", "NODE_NAME="+fl.name, bin, "--kube-subnet-mgr", "--kubeconfig-file", k.cluster.Kubeconfig,
		"--net-config-path", k.netConf, "--iface", "eth0", "--subnet-file", fl.envPath(), "--ip-masq")
	k.waitReady(k.nodes[0])
	k.waitReady(k.nodes[1])
	k.eventually("flanneld's subnet.env", 20*time.Second, func() bool {
		_, err := os.Stat(fl.envPath())
		return err == nil
	})
	for _, n := range k.nodes {
		k.checkPeers(n, k.nodes)
	}
	k.addPods()
	k.pingAll()

	stop(k.nodes[0].proc)
	k.startKubeSubnetd(k.nodes[0])
	k.waitReady(k.nodes[0])
	k.checkPeers(fl, k.nodes)
	k.pingAll()
}
