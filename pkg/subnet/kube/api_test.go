package kube_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/kube"
	kubetest "github.com/cnisuite/cni/test/kube"
)

// grant binds to the service account the rights the README lists for
// subnetd, and no others: nodes list and watch, nodes/status patch.
func grant(t *testing.T, c *kubetest.Cluster, namespace, name string) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "subnetd"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}}}}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "subnetd"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: namespace, Name: name}}}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(t.Context(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(within); ; time.Sleep(100 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
	}
}

// TestRealAPIServer: against kube-apiserver, with a service account that
// has only the README's rights, the source takes the Node's pod CIDR,
// writes flanneld's annotations and condition through nodes/status (in
// protobuf), follows a flanneld node's, writes its own again when removed,
// reports the API server's outage and works again after it.
func TestRealAPIServer(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	c.CreateNode(t, "me", "10.244.5.0/24")
	peer := node("flanneld", flanneldAnnotations("192.168.1.11", "0a:00:00:00:00:0b"), "10.244.6.0/24")
	if _, err := c.Client.CoreV1().Nodes().Create(t.Context(), peer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfig := c.ServiceAccountKubeconfig(t, "kube-flannel", "subnetd")
	grant(t, c, "kube-flannel", "subnetd")
	api, err := kube.NewREST(kubetest.RESTConfigFor(t, kubeconfig, c.NS))
	if err != nil {
		t.Fatal(err)
	}
	network, _ := subnet.ParseConfig([]byte(v4net))
	src, err := kube.New(kube.Options{API: api, NodeName: "me", Network: network, Node: me, SetNodeNetworkUnavailable: true,
		Timeout: 2 * time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var l subnet.Lease
	waitFor(t, "the lease (RBAC granted)", 30*time.Second, func() (err error) {
		l, err = src.Acquire(ctx)
		return err
	})
	if l.Subnets.V4 != netip.MustParsePrefix("10.244.5.0/24") {
		t.Fatalf("lease %v, want the Node's pod CIDR", l.Subnets)
	}
	n, err := c.Client.CoreV1().Nodes().Get(ctx, "me", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range flanneldAnnotations("192.168.1.10", "0a:00:00:00:00:0a") {
		if n.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, n.Annotations[k], v)
		}
	}
	if cond := condition(n); cond == nil || cond.Status != corev1.ConditionFalse || cond.Reason != "SubnetdIsUp" {
		t.Errorf("NetworkUnavailable %+v, want False", cond)
	}

	v := &views{}
	go src.Watch(ctx, v.take)
	waitFor(t, "both leases in the view", 10*time.Second, func() error { return same(v.nodes(), "flanneld", "me") })
	if a := v.byNode()["flanneld"]; a.PublicIP != netip.MustParseAddr("192.168.1.11") {
		t.Errorf("flanneld's lease %+v", a)
	}

	unset := []byte(`{"metadata":{"annotations":{"` + p + `public-ip":null}}}`)
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, "me", types.MergePatchType, unset, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed annotation written again", 10*time.Second, func() error {
		if _, err := src.Check(ctx, l); err != nil {
			return err
		}
		n, err := c.Client.CoreV1().Nodes().Get(ctx, "me", metav1.GetOptions{})
		if err == nil && n.Annotations[p+"public-ip"] != "192.168.1.10" {
			err = errors.New("public-ip not back")
		}
		return err
	})

	c.StopAPIServer(t)
	waitFor(t, "the outage reported", 10*time.Second, func() error {
		_, err := src.Check(ctx, l)
		if err == nil || errors.Is(err, subnet.ErrLeaseLost) || !strings.Contains(err.Error(), "unreachable") {
			return errors.New("Check: " + errString(err))
		}
		return nil
	})
	c.StartAPIServer(t)
	waitFor(t, "Check after the outage", 60*time.Second, func() error { _, err := src.Check(ctx, l); return err })
	c.DeleteNode(t, "flanneld")
	waitFor(t, "a deletion after the outage seen", 10*time.Second, func() error { return same(v.nodes(), "me") })
}

func same(got []string, want ...string) error {
	if !slices.Equal(got, want) {
		return errors.New("view holds " + strings.Join(got, ",") + ", want " + strings.Join(want, ","))
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// TestRESTConfigBurst: the client's burst covers the pages of the first
// list of a 5000-Node cluster (10 of 500) and the publication after it;
// client-go's default of 10 made the publication wait ~200 ms for a token.
func TestRESTConfigBurst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kubeconfig := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.0.2.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := kube.RESTConfig("", path)
	if err != nil {
		t.Fatal(err)
	}
	if c.RateLimiter != nil || c.Burst < 5000/500+1 {
		t.Errorf("burst %d (rate limiter %v): the first list's pages of a 5000-Node cluster would throttle the node's publication", c.Burst, c.RateLimiter)
	}
}
