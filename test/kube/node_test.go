package kubetest_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cnisuite/cni/internal/testutil"
	kubetest "github.com/cnisuite/cni/test/kube"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// images builds the test images once for the package's tests; their
// directory goes when the tests are done (testutil.Main).
var images = sync.OnceValues(func() (imgs [2]testutil.Image, err error) {
	dir, err := os.MkdirTemp("", "kubetest-images-")
	if err != nil {
		return imgs, err
	}
	testutil.AtExit(func() { os.RemoveAll(dir) })
	imgs[0], imgs[1], err = testutil.BuildTestImages(dir)
	return imgs, err
})

// startNode starts a node with the test images and the plugins in bin.
func startNode(t *testing.T, ns *netnstest.NS, bin string) *kubetest.Node {
	t.Helper()
	imgs, err := images()
	if err != nil {
		t.Fatal(err)
	}
	return kubetest.StartNode(t, kubetest.NodeOptions{NS: ns, PluginDir: bin, Pause: imgs[0], Images: imgs[1:]})
}

const bridgeConflist = `{"cniVersion":"1.0.0","name":"kubetest","plugins":[{"type":"bridge","bridge":"cni0","isGateway":true,
	"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/24"}]]}}]}`

// TestNode: containerd answers the CRI in the node, the network is not
// ready until a conflist appears in the conf dir, a pod sandbox then runs
// with an address in the node's namespace (seen in the node's /sys) and
// survives a restart of containerd; when the test ends nothing of the node
// is left: no process, no cgroup, no pod namespace.
func TestNode(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	bin := testutil.Plugins(t, "plugins/main/bridge", "plugins/main/loopback", "plugins/ipam/host-local")
	var pod kubetest.Pod
	var cgroupRoot string
	t.Run("node", func(t *testing.T) {
		n := startNode(t, netnstest.New(t, "kt-n"), bin)
		cgroupRoot = n.CgroupRoot
		v, err := n.CRI.Version(t.Context(), &runtimeapi.VersionRequest{})
		if err != nil || v.RuntimeName != "containerd" || v.RuntimeApiVersion != "v1" {
			t.Fatalf("Version: %v %v", v, err)
		}
		if networkReady(t, n) {
			t.Fatal("the network is ready without a conflist")
		}
		if err := os.WriteFile(filepath.Join(n.ConfDir, "10-kubetest.conflist"), []byte(bridgeConflist), 0o644); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the network ready once a conflist is there", func() bool { return networkReady(t, n) })

		pod = n.RunPod(t, n.PodConfig("p1"))
		if !strings.HasPrefix(pod.IP.String(), "10.88.0.") {
			t.Fatalf("pod address %s, want one of 10.88.0.0/24", pod.IP)
		}
		if links := n.Run(t, "ls", "/sys/class/net"); !strings.Contains(links, "cni0") {
			t.Fatalf("the node's /sys does not show its bridge: %s", links)
		}
		n.RestartContainerd(t)
		if again := n.Pod(t, pod.ID); again.PID != pod.PID || again.IP != pod.IP {
			t.Fatalf("after a restart of containerd the pod is %+v, was %+v", again, pod)
		}
	})
	if _, err := os.Stat(pod.NetNS()); err == nil {
		t.Errorf("the pause process %d outlived its node", pod.PID)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", cgroupRoot)); err == nil {
		t.Errorf("cgroup %s outlived its node", cgroupRoot)
	}
}

func networkReady(t *testing.T, n *kubetest.Node) bool {
	t.Helper()
	s, err := n.CRI.Status(t.Context(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	for _, c := range s.Status.Conditions {
		if c.Type == runtimeapi.NetworkReady {
			return c.Status
		}
	}
	return false
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
	}
}

// TestKubelet: kubelet on a node joins the control plane, its Node becomes
// Ready and gets a pod CIDR, a pod made through the API (placed by
// kube-scheduler, with its default service account's token) runs there
// with an address from the conflist, and keeps running across a restart of
// kubelet.
func TestKubelet(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	bin := testutil.Plugins(t, "plugins/main/bridge", "plugins/main/loopback", "plugins/ipam/host-local")
	ul, ns := underlay(t)
	c := kubetest.Start(t, kubetest.Options{NS: ul, Address: "192.168.78.1", ClusterCIDRs: []string{"10.244.0.0/16"}, Kubelets: true})
	n := startNode(t, ns, bin)
	if err := os.WriteFile(filepath.Join(n.ConfDir, "10-kubetest.conflist"), []byte(bridgeConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	n.StartKubelet(t, c, "node1", "192.168.78.10")
	c.WaitPodCIDRs(t, "node1", 1)

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "default"},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/hostname": "node1"},
			Containers: []corev1.Container{{Name: "c", Image: testutil.EchoImage.Name, ImagePullPolicy: corev1.PullNever}}}}
	if _, err := c.Client.CoreV1().Pods("default").Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ip := waitPodRunning(t, c, "p1")
	if !strings.HasPrefix(ip, "10.88.0.") {
		t.Fatalf("pod address %s, want one of 10.88.0.0/24", ip)
	}
	n.RestartKubelet(t)
	if again := waitPodRunning(t, c, "p1"); again != ip {
		t.Fatalf("after a restart of kubelet the pod has %s, had %s", again, ip)
	}
}

// waitPodRunning waits until the pod runs and returns its address.
func waitPodRunning(t *testing.T, c *kubetest.Cluster, name string) string {
	t.Helper()
	var ip string
	var last *corev1.Pod
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		p, err := c.Client.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			ip = p.Status.PodIP
			return ip
		}
		last = p
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not running after 60 s: %v; status %+v", name, err, last.Status)
		}
	}
}
