package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
func newKubeOverlay(t *testing.T, clusterCIDRs ...string) *kubeOverlay {
	o := newUnderlay(t, kubeNet)
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

func (k *kubeOverlay) nodeLog(n *sdNode) string {
	b, err := os.ReadFile(n.log)
	if err != nil {
		k.t.Fatal(err)
	}
	return string(b)
}

// TestKubeNotAssigned: a Node without a pod CIDR (no
// kube-controller-manager here) keeps subnetd alive and unready, /readyz
// saying why, one log line naming the node and the fixes; it is ready
// within 2 s of a patch assigning one. A pod CIDR outside the network is
// reported the same way, not a crash.
func TestKubeNotAssigned(t *testing.T) {
	k := newKubeOverlay(t)
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
