package kubetest_test

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	kubetest "github.com/cnisuite/cni/test/kube"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// underlay makes what test/e2e's overlay tests make: an underlay namespace
// whose bridge br0 has 192.168.78.1, and a node namespace joined to it with
// 192.168.78.10 on its eth0.
func underlay(t *testing.T) (ul, node *netnstest.NS) {
	ul = netnstest.New(t, "kube-ul")
	ul.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	ul.Run(t, "ip", "addr", "add", "192.168.78.1/24", "dev", "br0")
	ul.Run(t, "ip", "link", "set", "br0", "up")
	node = netnstest.New(t, "kube-n")
	ul.Run(t, "ip", "link", "add", "kv1", "type", "veth", "peer", "name", "eth0", "netns", node.Name)
	ul.Run(t, "ip", "link", "set", "kv1", "master", "br0", "up")
	node.Run(t, "ip", "addr", "add", "192.168.78.10/24", "dev", "eth0")
	node.Run(t, "ip", "link", "set", "eth0", "up")
	return ul, node
}

// TestControlPlane: the control plane on an underlay serves a node
// namespace through the admin kubeconfig (URL and CA), reports the pinned
// release, kube-controller-manager gives Nodes dual-stack pod CIDRs from the
// cluster CIDRs, and Nodes survive an API server outage (etcd kept).
func TestControlPlane(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ul, node := underlay(t)
	clusterCIDRs := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")}
	c := kubetest.Start(t, kubetest.Options{NS: ul, Address: "192.168.78.1",
		ClusterCIDRs: []string{clusterCIDRs[0].String(), clusterCIDRs[1].String()}})
	if !strings.HasPrefix(c.URL, "https://192.168.78.1:") {
		t.Errorf("URL %s, want the underlay's address", c.URL)
	}
	fromNode := kubetest.ClientFor(t, c.Kubeconfig, node)
	v, err := fromNode.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("the API server from the node namespace: %v", err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("server version %s, want v1.37.2", v.GitVersion)
	}

	c.CreateNode(t, "node1")
	c.CreateNode(t, "node2")
	got := map[string]bool{}
	for _, name := range []string{"node1", "node2"} {
		cidrs := c.WaitPodCIDRs(t, name, 2)
		for i, s := range cidrs {
			p, err := netip.ParsePrefix(s)
			if err != nil || !clusterCIDRs[i].Contains(p.Addr()) || p.Bits() != []int{24, 64}[i] || got[s] {
				t.Errorf("%s: pod CIDR %d %q: want a distinct /%d of %s", name, i, s, []int{24, 64}[i], clusterCIDRs[i])
			}
			got[s] = true
		}
	}
	before, err := fromNode.CoreV1().Nodes().Get(t.Context(), "node1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	c.StopAPIServer(t)
	if _, err := fromNode.CoreV1().Nodes().Get(t.Context(), "node1", metav1.GetOptions{}); err == nil {
		t.Error("the API server answers while stopped")
	}
	c.StartAPIServer(t)
	after, err := fromNode.CoreV1().Nodes().Get(t.Context(), "node1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node1 after the API server's restart: %v", err)
	}
	if after.UID != before.UID || strings.Join(after.Spec.PodCIDRs, ",") != strings.Join(before.Spec.PodCIDRs, ",") {
		t.Errorf("node1 after the restart: uid %s, pod CIDRs %v; before: %s, %v", after.UID, after.Spec.PodCIDRs, before.UID, before.Spec.PodCIDRs)
	}

	c.DeleteNode(t, "node2")
	if _, err := c.Client.CoreV1().Nodes().Get(t.Context(), "node2", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("node2 after DeleteNode: %v, want not found", err)
	}
}

// TestOwnNamespace: without a namespace given, the control plane runs in
// one of its own on loopback; pod CIDRs can be set by hand (and not changed,
// as the API server decides); a service account's kubeconfig authenticates
// an identity that RBAC refuses until a ClusterRole is bound to it.
func TestOwnNamespace(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	if !strings.HasPrefix(c.URL, "https://127.0.0.1:") {
		t.Errorf("URL %s, want the namespace's loopback", c.URL)
	}
	c.CreateNode(t, "n1")
	if n := c.SetPodCIDRs(t, "n1", "10.244.5.0/24"); n.Spec.PodCIDR != "10.244.5.0/24" {
		t.Errorf("pod CIDR %q after SetPodCIDRs", n.Spec.PodCIDR)
	}
	change := []byte(`{"spec":{"podCIDR":"10.244.6.0/24","podCIDRs":["10.244.6.0/24"]}}`)
	if _, err := c.Client.CoreV1().Nodes().Patch(t.Context(), "n1", types.StrategicMergePatchType, change, metav1.PatchOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("changing a set pod CIDR: %v, want refused as invalid", err)
	}
	if n := c.CreateNode(t, "n2", "10.244.7.0/24", "fd00:10:244:7::/64"); len(n.Spec.PodCIDRs) != 2 {
		t.Errorf("node created with two pod CIDRs has %v", n.Spec.PodCIDRs)
	}

	sa := kubetest.ClientFor(t, c.ServiceAccountKubeconfig(t, "kube-flannel", "flannel"), c.NS)
	if _, err := sa.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing nodes as the service account before RBAC grants it: %v, want forbidden", err)
	}
	grantNodes(t, c, "kube-flannel", "flannel")
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := sa.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listing nodes as the service account after RBAC grants it: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// grantNodes binds a ClusterRole that reads Nodes to the service account.
func grantNodes(t *testing.T, c *kubetest.Cluster, namespace, name string) {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "read-nodes"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}}}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "read-nodes"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: namespace, Name: name}}}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestBinariesCached: once built, the binaries come from the cache: the
// build script succeeds with a Go that cannot build anything.
func TestBinariesCached(t *testing.T) {
	netnstest.SkipUnlessRoot(t) // only privileged tests run the binaries: do not build them for others
	names := []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"}
	dir := filepath.Dir(kubetest.Binary(t, names[0]))
	for _, name := range names[1:] {
		kubetest.Binary(t, name)
	}
	cmd := exec.Command("../../scripts/k8s-bins.sh", names...)
	cmd.Env = append(os.Environ(), "GO=false")
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != dir {
		t.Fatalf("k8s-bins.sh with the binaries cached: %v, printed %q, want %s", err, out, dir)
	}
}
