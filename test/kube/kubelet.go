package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnisuite/cni/pkg/family"
)

// kubeletConfig is what kubelet v1.37 needs to run on these machines, in a
// node namespace beside others: cgroups v1 (failCgroupV1), the cgroupfs
// driver under the node's own cgroup root; no swap check, eviction, image
// GC or node-allocatable enforcement (the machine is shared, its disk and
// memory are not the node's); an oom_score_adj of 0 (a negative one is
// refused here); kernel defaults checked, never set (protectKernelDefaults:
// the node's mount namespace shows kubelet the values it wants, see
// kernelDefaults); the flex volume directory under /var/lib/kubelet, which
// is private to the node, not /usr/libexec/kubernetes; no authentication of
// the API server's calls (logs, exec).
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
containerRuntimeEndpoint: unix://%s
address: %q
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
failSwapOn: false
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
oomScoreAdj: 0
evictionHard: {memory.available: "0%%", nodefs.available: "0%%", nodefs.inodesFree: "0%%", imagefs.available: "0%%", imagefs.inodesFree: "0%%"}
imageGCHighThresholdPercent: 100
protectKernelDefaults: true
volumePluginDir: /var/lib/kubelet/volume-plugins
`

// kernelDefaults are the sysctls kubelet checks, and the values it wants.
var kernelDefaults = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// StartKubelet runs kubelet on the node as Node name with address nodeIP
// (an address of the node's namespace that the control plane reaches),
// joined to c (started with Options.Kubelets) with its admin kubeconfig, and
// waits until the Node is Ready: the node's conf dir must hold a conflist
// by then. A node with NodeOptions.OwnCNIDirs gets its network from a
// DaemonSet: StartKubelet returns once kubelet has registered its Node,
// NotReady until then. The node reaches the API server through the
// kubernetes Service too, as kube-proxy would make it (proxyAPIServer).
func (n *Node) StartKubelet(t testing.TB, c *Cluster, name, nodeIP string) {
	t.Helper()
	n.kernelDefaults(t)
	n.proxyAPIServer(t, c)
	config := filepath.Join(n.dir, "kubelet.yaml")
	text := fmt.Sprintf(kubeletConfig, n.CgroupRoot, containerdSocket, nodeIP)
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	n.kubelet.argv = []string{Binary(t, "kubelet"), "--config", config, "--kubeconfig", c.Kubeconfig,
		"--hostname-override", name, "--node-ip", nodeIP}
	n.cluster, n.name = c, name
	n.runKubelet(t, !n.ownCNI)
}

// proxyAPIServer does kube-proxy's part for the kubernetes Service on the
// node: connections from the node to the Service's address go to the API
// server, for pods of the host's network that find it through
// KUBERNETES_SERVICE_HOST (rest.InClusterConfig, a CNI DaemonSet's). The
// route makes the Service's address reachable until the DNAT rewrites it;
// the API server must be on a subnet of the node.
func (n *Node) proxyAPIServer(t testing.TB, c *Cluster) {
	t.Helper()
	svc, api := c.KubernetesService, c.apiAddr
	f := family.Of(svc.Addr())
	if family.Of(api.Addr()) != f {
		t.Fatalf("the kubernetes Service %s and the API server %s are not of one family", svc, api)
	}
	n.Run(t, "ip", "route", "replace", svc.Addr().String(), "via", api.Addr().String())
	n.Run(t, f.IPTables(), "-t", "nat", "-A", "OUTPUT", "-d", svc.Addr().String(), "-p", "tcp",
		"--dport", strconv.Itoa(int(svc.Port())), "-j", "DNAT", "--to-destination", api.String())
}

// RestartKubelet stops kubelet and starts it again, as its upgrade does:
// pods keep running meanwhile. It returns once the Node is Ready again.
func (n *Node) RestartKubelet(t testing.TB) {
	t.Helper()
	n.kubelet.stop(10 * time.Second)
	n.runKubelet(t, true)
}

// runKubelet starts kubelet and waits until its Node has a heartbeat of
// this run: Ready, when ready is set.
func (n *Node) runKubelet(t testing.TB, ready bool) {
	t.Helper()
	started := time.Now().Truncate(time.Second) // conditions' times have seconds only
	if err := n.kubelet.startWith(n.Enter(), n.NS.Name); err != nil {
		t.Fatal(err)
	}
	what := "Node " + n.name + " registered"
	if ready {
		what = "Node " + n.name + " Ready"
	}
	waitFor(t, what, 60*time.Second, []*process{n.containerd, n.kubelet}, func() error {
		node, err := n.cluster.Client.CoreV1().Nodes().Get(t.Context(), n.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && (cond.Status == corev1.ConditionTrue || !ready) && !cond.LastHeartbeatTime.Time.Before(started) {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", node.Status.Conditions)
	})
}

// kernelDefaults puts a file with kubelet's value over each sysctl of the
// node's mount namespace that has another, so that kubelet, which checks
// them (protectKernelDefaults), never changes the machine's.
func (n *Node) kernelDefaults(t testing.TB) {
	t.Helper()
	dir := filepath.Join(n.dir, "sysctl")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for key, want := range kernelDefaults {
		path := "/proc/sys/" + key
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(got)) == want {
			continue
		}
		file := filepath.Join(dir, strings.ReplaceAll(key, "/", "."))
		if err := os.WriteFile(file, []byte(want+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
		n.Run(t, "mount", "--bind", file, path)
	}
}
