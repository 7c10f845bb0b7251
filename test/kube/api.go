package kubetest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// ClientFor returns a client authenticated by kubeconfig whose connections
// are opened inside ns: the test binary runs in the machine's own namespace,
// where no control plane listens.
func ClientFor(t testing.TB, kubeconfig string, ns *netnstest.NS) kubernetes.Interface {
	t.Helper()
	c, err := clientIn(kubeconfig, ns)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// RESTConfigFor is the configuration ClientFor's client is made of, for
// code under test that makes its own client: authenticated by kubeconfig,
// connecting from inside ns, without a request timeout (watches last).
func RESTConfigFor(t testing.TB, kubeconfig string, ns *netnstest.NS) *rest.Config {
	t.Helper()
	cfg, err := restConfigIn(kubeconfig, ns)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func restConfigIn(kubeconfig string, ns *netnstest.NS) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig %s: %w", kubeconfig, err)
	}
	// The socket is made on the thread netns.Do moved into ns; it stays
	// there wherever the connection is then used.
	cfg.Dial = func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
		err = netns.Do(ns.Path, func() error {
			conn, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	return cfg, nil
}

func clientIn(kubeconfig string, ns *netnstest.NS) (kubernetes.Interface, error) {
	cfg, err := restConfigIn(kubeconfig, ns)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second // a request to a stopped API server fails instead of hanging
	cfg.QPS, cfg.Burst = 100, 200
	return kubernetes.NewForConfig(cfg)
}

// CreateNode creates a Node object (no kubelet behind it) with the given pod
// CIDRs, or none: kube-controller-manager assigns them when it runs.
func (c *Cluster) CreateNode(t testing.TB, name string, podCIDRs ...string) *corev1.Node {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if len(podCIDRs) > 0 {
		node.Spec.PodCIDR, node.Spec.PodCIDRs = podCIDRs[0], podCIDRs
	}
	node, err := c.Client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
	return node
}

// DeleteNode deletes a Node object; one already gone is no error.
func (c *Cluster) DeleteNode(t testing.TB, name string) {
	t.Helper()
	err := c.Client.CoreV1().Nodes().Delete(t.Context(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("deleting node %s: %v", name, err)
	}
}

// SetPodCIDRs sets the pod CIDRs of a Node that has none, as
// kube-controller-manager does. The API server refuses to change pod CIDRs
// once set (only a second family may be added): delete and create the node
// to give it others.
func (c *Cluster) SetPodCIDRs(t testing.TB, name string, podCIDRs ...string) *corev1.Node {
	t.Helper()
	if len(podCIDRs) == 0 {
		t.Fatal("SetPodCIDRs: no pod CIDR given")
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": podCIDRs[0], "podCIDRs": podCIDRs}})
	if err != nil {
		t.Fatal(err)
	}
	node, err := c.Client.CoreV1().Nodes().Patch(t.Context(), name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("setting the pod CIDRs of node %s to %v: %v", name, podCIDRs, err)
	}
	return node
}

// WaitPodCIDRs waits until the Node has n pod CIDRs (one per family of the
// cluster CIDRs) and returns them. The deadline is generous: this waits for
// kube-controller-manager, it does not time it.
func (c *Cluster) WaitPodCIDRs(t testing.TB, name string, n int) []string {
	t.Helper()
	var cidrs []string
	c.waitFor(t, fmt.Sprintf("%d pod CIDRs on node %s", n, name), 60*time.Second, func() error {
		node, err := c.Client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cidrs = node.Spec.PodCIDRs; len(cidrs) < n {
			return fmt.Errorf("pod CIDRs %v", cidrs)
		}
		return nil
	})
	return cidrs
}

// ServiceAccountKubeconfig creates the service account namespace/name (and
// its namespace) when missing, requests a token for it and writes a
// kubeconfig with it: an identity without rights until RBAC grants them
// (as kube-flannel.yml grants its flannel service account), the way a
// DaemonSet's pods authenticate. It returns the kubeconfig's path.
func (c *Cluster) ServiceAccountKubeconfig(t testing.TB, namespace, name string) string {
	t.Helper()
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating service account %s/%s: %v", namespace, name, err)
	}
	day := int64(24 * 3600)
	tr, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &day}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for service account %s/%s: %v", namespace, name, err)
	}
	path := filepath.Join(c.dir, fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	if err := writeKubeconfig(path, c.URL, c.CA, namespace+"-"+name, tr.Status.Token); err != nil {
		t.Fatal(err)
	}
	return path
}

// Kubectl runs kubectl (the release test/kube builds) with args as the
// admin, from the control plane's namespace, stdin given (a manifest for
// `apply -f -`, say), and returns its output; it fails the test when
// kubectl fails.
func (c *Cluster) Kubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	argv := append([]string{"netns", "exec", c.NS.Name, Binary(t, "kubectl"), "--kubeconfig", c.Kubeconfig}, args...)
	cmd := exec.Command("ip", argv...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
