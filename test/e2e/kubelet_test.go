package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnisuite/cni/pkg/netns"
	kubetest "github.com/cnisuite/cni/test/kube"
)

// Kubernetes for real: the Kubernetes API mode's overlay (kube_test.go) with
// kubelet and containerd on every node (test/kube's Node), our plugins in
// containerd's bin_dir and conf/10-flannel.conflist in its conf_dir, as
// installed on a node. Pods are made through the API.
type kubeletNode struct {
	*sdNode
	node *kubetest.Node
}

// newKubeletCluster starts the control plane on the underlay and n nodes,
// each with containerd, kubelet (its Node Ready) and subnetd (ready).
func newKubeletCluster(t *testing.T, n int) (*kubeOverlay, []*kubeletNode) {
	o := newUnderlay(t, kubeNet)
	c := kubetest.Start(t, kubetest.Options{NS: o.ul, Address: sdUnderlay, ClusterCIDRs: []string{"10.252.0.0/16"}, Kubelets: true})
	k := &kubeOverlay{overlayTest: o, cluster: c}
	conflist, err := os.ReadFile("../../conf/10-flannel.conflist")
	if err != nil {
		t.Fatal(err)
	}
	imgs := testImages(t)
	var nodes []*kubeletNode
	for i := 1; i <= n; i++ {
		sd := o.addNode(i)
		confDir := filepath.Join(sd.dir, "net.d")
		err := os.MkdirAll(confDir, 0o755)
		if err == nil {
			err = os.WriteFile(filepath.Join(confDir, "10-flannel.conflist"), conflist, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		kn := &kubeletNode{sdNode: sd, node: kubetest.StartNode(t, kubetest.NodeOptions{NS: sd.ns, PluginDir: binDir,
			ConfDir: confDir, Pause: imgs[0], Images: imgs[1:]})}
		kn.node.StartKubelet(t, c, sd.name, sd.ip)
		// subnetd as on a node: its files (subnet.env, its data dir) where
		// flanneld's are, in the node's private /run and /var/lib.
		kn.node.Spawn(t, "subnetd", "env", "NODE_NAME="+sd.name, o.subnetd, "--kube-subnet-mgr",
			"--kubeconfig-file", c.Kubeconfig, "--net-config-path", o.netConf, "--iface", "eth0",
			"--healthz-ip", "127.0.0.1", "--healthz-port", "9090", "--ip-masq")
		nodes = append(nodes, kn)
	}
	for _, kn := range nodes {
		k.waitReady(kn.sdNode)
	}
	return k, nodes
}

// echoPod makes a pod of the echo image (a TCP echo server on 8080), with
// the ports given, that kube-scheduler places on the Node named node.
func echoPod(t *testing.T, c *kubetest.Cluster, name, node string, ports ...corev1.ContainerPort) {
	t.Helper()
	annotatedEchoPod(t, c, name, node, nil, ports...)
}

// annotatedEchoPod is echoPod with the pod's annotations.
func annotatedEchoPod(t *testing.T, c *kubetest.Cluster, name, node string, annotations map[string]string, ports ...corev1.ContainerPort) {
	t.Helper()
	img := testImages(t)[1]
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: annotations},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/hostname": node},
			Containers: []corev1.Container{{Name: "echo", Image: img.Name, ImagePullPolicy: corev1.PullNever, Ports: ports}}}}
	if _, err := c.Client.CoreV1().Pods("default").Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod %s: %v", name, err)
	}
}

// runningPod waits until the pod runs with an address, and returns it.
func runningPod(t *testing.T, c *kubetest.Cluster, name string) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		p, err := c.Client.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			return p
		}
		if err == nil {
			last = p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not running after 60 s: %v; last status %+v", name, err, last)
		}
	}
}

// tcpEcho connects from inside a namespace to addr and checks that what it
// sends comes back.
func tcpEcho(t *testing.T, from, addr string) {
	t.Helper()
	if err := echoFrom(from, addr); err != nil {
		t.Error(err)
	}
}

// echoFrom sends a line from inside the namespace at path from to the
// echo server at addr and checks that it comes back. A refused connection
// is tried again for 5 s: a pod is Running once its container has started,
// maybe before its server listens.
func echoFrom(from, addr string) error {
	msg := fmt.Sprintf("from %s to %s\n", from, addr)
	got := make([]byte, len(msg))
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err = netns.Do(from, func() error { return echoOnce(addr, msg, got) })
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || string(got) != msg {
		return fmt.Errorf("TCP echo from %s to %s: %v, got %q", from, addr, err, got)
	}
	return nil
}

// echoOnce sends msg over a new connection to addr and reads the answer
// into got.
func echoOnce(addr, msg string, got []byte) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	_, err = io.ReadFull(c, got)
	return err
}

// kubePod is a pod on a kubelet node: its API object and its sandbox.
type kubePod struct {
	api *corev1.Pod
	box kubetest.Pod
	on  *kubeletNode
}

// TestKubelet: two nodes of the Kubernetes API mode's overlay, each with
// containerd, kubelet and subnetd, conf/10-flannel.conflist: both Nodes
// Ready, a pod of the echo image made through the API on each, with an
// address of its Node's pod CIDR, reached over TCP from the other node's
// pod; a restart of kubelet on one node and of containerd on the other,
// pods running, changes nothing (same sandboxes, addresses, no container
// restart) and traffic flows; the pods deleted leave nothing behind on
// either node.
func TestKubelet(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	start := time.Now()
	k, nodes := newKubeletCluster(t, 2)
	t.Logf("control plane and %d nodes ready in %v", len(nodes), time.Since(start).Round(time.Millisecond))
	start = time.Now()
	pods := make([]*kubePod, len(nodes))
	for _, kn := range nodes {
		echoPod(t, k.cluster, "echo-"+kn.name, kn.name)
	}
	for i, kn := range nodes {
		pods[i] = &kubePod{api: runningPod(t, k.cluster, "echo-"+kn.name), on: kn}
		pods[i].box = kn.node.PodOf(t, "default", pods[i].api.Name)
		cidr := k.podCIDR(kn.sdNode)
		if !cidr.Contains(pods[i].box.IP) || pods[i].api.Status.PodIP != pods[i].box.IP.String() {
			t.Fatalf("pod %s: address %s (CRI: %s), want one of its Node's pod CIDR %s", pods[i].api.Name, pods[i].api.Status.PodIP, pods[i].box.IP, cidr)
		}
	}
	t.Logf("pods running in %v", time.Since(start).Round(time.Millisecond))
	crossTraffic(t, pods)

	start = time.Now()
	nodes[0].node.RestartKubelet(t)
	t.Logf("kubelet restarted, Node Ready in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	nodes[1].node.RestartContainerd(t)
	t.Logf("containerd restarted in %v", time.Since(start).Round(time.Millisecond))
	for _, p := range pods {
		again := runningPod(t, k.cluster, p.api.Name)
		box := p.on.node.PodOf(t, "default", p.api.Name)
		if again.UID != p.api.UID || box != p.box || again.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("pod %s after the restarts: uid %s, sandbox %+v, %d container restarts; before: %s, %+v",
				p.api.Name, again.UID, box, again.Status.ContainerStatuses[0].RestartCount, p.api.UID, p.box)
		}
	}
	crossTraffic(t, pods)

	for _, p := range pods {
		// Where noPodState looks, the pod has its state until then.
		if r := reservations(t, p.on.node.Path("/var/lib/cni/networks"), "cbr0"); !slices.Contains(r, p.box.IP.String()) {
			t.Fatalf("host-local reserves %v on %s, not pod %s's %s", r, p.on.name, p.api.Name, p.box.IP)
		}
		if saved := dirNames(t, p.on.node.Path("/var/lib/cni/flannel")); !slices.Contains(saved, p.box.ID+"-eth0") {
			t.Fatalf("flannel saved %v on %s, not pod %s's sandbox %s", saved, p.on.name, p.api.Name, p.box.ID)
		}
		err := k.cluster.Client.CoreV1().Pods("default").Delete(t.Context(), p.api.Name, metav1.DeleteOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	start = time.Now()
	for _, p := range pods {
		podGone(t, k.cluster, p.api.Name)
		t.Logf("pod %s gone %v after its deletion", p.api.Name, time.Since(start).Round(time.Millisecond))
		noPodState(t, p.on.node, "cbr0", []kubetest.Pod{p.box})
	}
}

// crossTraffic: every pod reaches every other's echo server.
func crossTraffic(t *testing.T, pods []*kubePod) {
	t.Helper()
	for _, from := range pods {
		for _, to := range pods {
			if from != to {
				tcpEcho(t, from.box.NetNS(), netip.AddrPortFrom(to.box.IP, 8080).String())
			}
		}
	}
}

// podGone waits until kubelet has finished the pod and the API server
// forgotten it.
func podGone(t *testing.T, c *kubetest.Cluster, name string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := c.Client.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s still there 60 s after its deletion: %v", name, err)
		}
	}
}
