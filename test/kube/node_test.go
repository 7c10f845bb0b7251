package kubetest_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
// ready until a conflist appears in the conf dir, a pod sandbox is then
// cycled (CyclePod's times), another runs with an address in the node's
// namespace (seen in the node's /sys) and survives a restart of
// containerd; when the test ends nothing of the node is left: no process,
// no cgroup, no pod namespace.
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

		pt, err := n.CyclePod(t.Context(), n.PodConfig("p0"))
		if err != nil || pt.Run <= 0 || pt.Stop <= 0 || pt.Remove <= 0 {
			t.Fatalf("CyclePod: %+v, %v", pt, err)
		}
		t.Logf("a pod sandbox's cycle: %+v", pt)
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
