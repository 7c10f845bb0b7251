package cnictl

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/kube"
	kubetest "github.com/cnisuite/cni/test/kube"
)

// kubeAPI is a real control plane (test/kube: etcd and kube-apiserver in a
// namespace of its own) that a test's subtests share, each with Nodes of
// its own.
type kubeAPI struct {
	c    *kubetest.Cluster
	dial func(ctx context.Context, network, addr string) (net.Conn, error) // into the control plane's namespace
}

func startAPI(t *testing.T) *kubeAPI {
	c := kubetest.Start(t, kubetest.Options{})
	return &kubeAPI{c: c, dial: kubetest.RESTConfigFor(t, c.Kubeconfig, c.NS).Dial}
}

// kubeNodes is the Kubernetes side of a node fixture: net-conf.json and
// the Nodes of ownSpec (this node) and peerSpecs, with the pod CIDRs and
// annotations subnetd would leave.
type kubeNodes struct {
	api                 *kubeAPI
	kubeconfig, netConf string
	extra               []string // more doctor/leases flags
}

func (k *kubeNodes) args() []string {
	return append([]string{"--kube-subnet-mgr", "--kubeconfig-file", k.kubeconfig, "--net-config-path", k.netConf,
		"--node-name", nodeA, "--etcd-timeout", "3s"}, k.extra...)
}

const annPrefix = kube.DefaultPrefix + "/"

// annotations are what subnetd on the spec's node publishes.
func (s leaseSpec) annotations(t *testing.T) map[string]string {
	var a subnet.Attrs
	must(t, json.Unmarshal(s.value(t), &a))
	return map[string]string{annPrefix + "kube-subnet-manager": "true", annPrefix + "backend-type": a.BackendType,
		annPrefix + "backend-data": string(a.BackendData), annPrefix + "backend-v6-data": string(a.BackendV6Data),
		annPrefix + "public-ip": s.ip, annPrefix + "public-ipv6": s.ip6}
}

// kubeFixtureNode is a healthy node in the Kubernetes API mode.
func kubeFixtureNode(t *testing.T, api *kubeAPI) *nodeFixture {
	t.Helper()
	f := baseNode(t)
	f.kube = &kubeNodes{api: api, kubeconfig: api.c.Kubeconfig, netConf: filepath.Join(t.TempDir(), "net-conf.json")}
	must(t, os.WriteFile(f.kube.netConf, []byte(dualStackConfig), 0o644))
	for _, s := range append([]leaseSpec{ownSpec}, peerSpecs...) {
		f.kube.setNode(t, s.id, []string{s.v4, s.v6}, s.annotations(t))
	}
	return f
}

// setNode (re)creates a Node with these pod CIDRs and annotations (nil:
// none); it is deleted when the test ends.
func (k *kubeNodes) setNode(t *testing.T, name string, podCIDRs []string, ann map[string]string) {
	t.Helper()
	nodes := k.api.c.Client.CoreV1().Nodes()
	k.deleteNode(t, name)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDRs[0], podCIDRs
	}
	_, err := nodes.Create(context.Background(), n, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() {
		err := k.api.c.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Logf("deleting node %s: %v", name, err) // the API server was stopped
		}
	})
}

func (k *kubeNodes) deleteNode(t *testing.T, name string) {
	t.Helper()
	err := k.api.c.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

func (k *kubeNodes) annotate(t *testing.T, name, key, value string) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{key: value}}})
	must(t, err)
	_, err = k.api.c.Client.CoreV1().Nodes().Patch(context.Background(), name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	must(t, err)
}

// bindRole gives the service account a ClusterRole of these rules, and
// waits until the API server applies it.
func (a *kubeAPI) bindRole(t *testing.T, sa string, rules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	rbac := a.c.Client.RbacV1()
	_, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: rules}, metav1.CreateOptions{})
	must(t, err)
	_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: sa},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "kube-flannel", Name: sa}}}, metav1.CreateOptions{})
	must(t, err)
	client := kubetest.ClientFor(t, a.c.ServiceAccountKubeconfig(t, "kube-flannel", sa), a.c.NS)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("the role of %s not applied: %v", sa, err)
		}
	}
}

// TestKubeDoctor: doctor --kube-subnet-mgr passes on a node as subnetd
// leaves it, against a real API server, and names each way the API, this
// Node, its annotations, subnet.env and the peers' overlay entries break.
func TestKubeDoctor(t *testing.T) {
	api := startAPI(t)
	t.Run("healthy", func(t *testing.T) {
		f := kubeFixtureNode(t, api)
		code, fds, report := f.doctor(t)
		allOK(t, fds, kubeStore)
		if code != 0 || slices.ContainsFunc(fds, func(fd Finding) bool { return fd.Check == "etcd" }) {
			t.Fatalf("exit %d:\n%s", code, report)
		}
	})
	peerB := peerSpecs[0]
	nodeACIDRs := []string{ownSpec.v4, ownSpec.v6}
	tests := []struct {
		name         string
		breakIt      func(t *testing.T, f *nodeFixture)
		check        string
		sev          Severity
		message, fix string
	}{
		{"no pod CIDR", func(t *testing.T, f *nodeFixture) {
			f.kube.setNode(t, nodeA, nil, nil)
		}, "kube-node", Error, `node "node-a" pod cidr not assigned`,
			`--allocate-node-cidrs=true --cluster-cidr=10.244.0.0/16,fd44::/56 (kubeadm: kubeadm init --pod-network-cidr=10.244.0.0/16,fd44::/56), ` +
				`or assign them by hand: kubectl patch node node-a -p '{"spec":{"podCIDR":"<a free /28 of 10.244.0.0/16>","podCIDRs":["<a free /28 of 10.244.0.0/16>","<a free /64 of fd44::/56>"]}}'`},
		{"pod CIDR outside the network", func(t *testing.T, f *nodeFixture) {
			f.kube.setNode(t, nodeA, []string{"10.245.1.0/28", ownSpec.v6}, ownSpec.annotations(t))
		}, "kube-node", Error, "the pod CIDRs 10.245.1.0/28,fd44:0:0:1::/64 of node \"node-a\" do not fit", "--cluster-cidr"},
		{"no IPv6 pod CIDR on a dual-stack network", func(t *testing.T, f *nodeFixture) {
			f.kube.setNode(t, nodeA, []string{ownSpec.v4}, ownSpec.annotations(t))
		}, "kube-node", Error, "the pod CIDRs 10.244.1.0/28 of node \"node-a\" do not fit", "one per family"},
		{"subnet.env of other pod CIDRs", func(t *testing.T, f *nodeFixture) {
			f.kube.setNode(t, nodeA, []string{"10.244.5.0/28", "fd44:0:0:5::/64"}, ownSpec.annotations(t))
		}, "kube-node", Error, "is stale: it says 10.244.1.0/28,fd44:0:0:1::/64, node \"node-a\" has pod CIDRs 10.244.5.0/28,fd44:0:0:5::/64", "rewrites subnet.env"},
		{"annotations missing", func(t *testing.T, f *nodeFixture) {
			f.kube.setNode(t, nodeA, nodeACIDRs, nil)
		}, "node-annotations", Error, `node "node-a" has no flannel.alpha.coreos.com annotations`, "run subnetd --kube-subnet-mgr on this node"},
		{"annotation unusable", func(t *testing.T, f *nodeFixture) {
			f.kube.annotate(t, nodeA, annPrefix+"public-ipv6", "192.168.50.1")
		}, "node-annotations", Error, `the annotations of node "node-a" are unusable`, "restart subnetd on this node"},
		{"VTEP MAC annotation is not flannel.1's", func(t *testing.T, f *nodeFixture) {
			f.kube.annotate(t, nodeA, annPrefix+"backend-data", `{"VNI":1,"VtepMAC":"02:00:00:00:00:99"}`)
		}, "node-annotations", Error, `the annotations of node "node-a" do not match this node`, "publishes flannel.<VNI>'s MAC"},
		{"public IP annotation is not this node's", func(t *testing.T, f *nodeFixture) {
			f.kube.annotate(t, nodeA, annPrefix+"public-ip", "192.168.50.99")
		}, "node-annotations", Error, `do not match this node`, "its public address again"},
		{"peer route missing", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "ip", "route", "del", "10.244.2.0/28")
		}, "overlay-peers", Error, "1 overlay entries for other nodes' leases are missing",
			"ip route replace 10.244.2.0/28 nhid "}, // the nexthop of ours for 10.244.2.0 is left
		{"peer Node gone", func(t *testing.T, f *nodeFixture) {
			f.kube.deleteNode(t, peerB.id)
		}, "overlay-peers", Warn, "7 overlay entries serve no lease", "ip route del 10.244.2.0/28"},
		{"a peer subnetd cannot program", func(t *testing.T, f *nodeFixture) {
			f.kube.annotate(t, peerB.id, annPrefix+"backend-type", "host-gw")
		}, "overlay-peers", Warn, "the lease of 10.244.2.0/28,fd44:0:0:2::/64 cannot be programmed", "`kubectl delete node node-b`"},
		{"401: a token the API server does not know", func(t *testing.T, f *nodeFixture) {
			f.kube.kubeconfig = badToken(t, api.c.Kubeconfig)
		}, "kube-api", Error, "refuses the credentials (401 Unauthorized)", "valid --kubeconfig-file"},
		{"403: a service account without kube-flannel's role", func(t *testing.T, f *nodeFixture) {
			f.kube.kubeconfig = api.c.ServiceAccountKubeconfig(t, "kube-flannel", "norole")
		}, "kube-api", Error, "forbids these credentials to list nodes (403 Forbidden); they lack get nodes, list nodes, watch nodes, patch nodes/status",
			"it grants nodes get, list and watch, and nodes/status patch"},
		{"403 later: a role that only reads Nodes", func(t *testing.T, f *nodeFixture) {
			api.bindRole(t, "readonly", []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}})
			f.kube.kubeconfig = api.c.ServiceAccountKubeconfig(t, "kube-flannel", "readonly")
		}, "kube-api", Error, "these credentials lack patch nodes/status", "kubectl create clusterrolebinding flannel"},
		{"API server down", func(t *testing.T, f *nodeFixture) {
			api.c.StopAPIServer(t) // the last case: it stays down
		}, "kube-api", Error, "the Kubernetes API at https://127.0.0.1:", "kubectl --kubeconfig <file> get --raw /readyz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := kubeFixtureNode(t, api)
			tt.breakIt(t, f)
			code, fds, report := f.doctor(t)
			if !slices.ContainsFunc(fds, func(fd Finding) bool {
				return fd.Check == tt.check && fd.Severity == tt.sev && strings.Contains(fd.Message, tt.message) && strings.Contains(fd.Fix, tt.fix)
			}) || code != int(worst(fds)) {
				t.Fatalf("exit %d; want a %s finding of %s with %q and fix %q:\n%s", code, tt.sev, tt.check, tt.message, tt.fix, report)
			}
		})
	}
}

// badToken is a copy of kubeconfig whose token the API server never issued.
func badToken(t *testing.T, kubeconfig string) string {
	b, err := os.ReadFile(kubeconfig)
	must(t, err)
	i := strings.Index(string(b), "token: ")
	if i < 0 {
		t.Fatalf("no token in %s", kubeconfig)
	}
	out := filepath.Join(t.TempDir(), "bad.kubeconfig")
	must(t, os.WriteFile(out, append(b[:i:i], []byte("token: not-a-token-of-this-cluster\n")...), 0o600))
	return out
}

// kubeLeasesJSON runs `cnictl leases --kube-subnet-mgr --json` on the node.
func kubeLeasesJSON(t *testing.T, f *nodeFixture) map[string]kubeRow {
	t.Helper()
	code, out, stderr := f.run("leases", "--json", "--netns", f.ns.Path, "--subnet-file", f.subnet)
	var rows []kubeRow
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil {
		t.Fatalf("exit %d, %v: %s %s", code, err, out, stderr)
	}
	byNode := map[string]kubeRow{}
	for _, r := range rows {
		byNode[r.Node] = r
	}
	return byNode
}

// TestKubeLeases: `cnictl leases --kube-subnet-mgr` lists every Node of a
// real API server with its state as subnetd judges it, and whether this
// node's kernel routes to it.
func TestKubeLeases(t *testing.T) {
	api := startAPI(t)
	f := kubeFixtureNode(t, api)
	f.kube.setNode(t, "node-d", nil, nil)
	f.kube.setNode(t, "node-e", []string{"10.244.5.0/28", "fd44:0:0:5::/64"}, nil)
	bad := leaseSpec{"node-f", "10.244.6.0/28", "fd44:0:0:6::/64", "192.168.50.6", "fd50::6", true}
	f.kube.setNode(t, bad.id, []string{bad.v4, bad.v6}, bad.annotations(t))
	f.kube.annotate(t, bad.id, annPrefix+"public-ip", "nowhere")
	hostgw := leaseSpec{"node-g", "10.244.7.0/28", "fd44:0:0:7::/64", "192.168.50.7", "fd50::7", true}
	f.kube.setNode(t, hostgw.id, []string{hostgw.v4, hostgw.v6}, hostgw.annotations(t))
	f.kube.annotate(t, hostgw.id, annPrefix+"backend-type", "host-gw")
	f.ns.Run(t, "ip", "route", "del", "10.244.3.0/28")

	rows := kubeLeasesJSON(t, f)
	a, b := rows["node-a"], rows["node-b"]
	if len(rows) != 7 || !a.ThisNode || a.Kernel != "this node" || a.State != "ok" || b.ThisNode || b.State != "ok" || b.Kernel != "ok" {
		t.Fatalf("rows: %+v", rows)
	}
	if strings.Join(a.PodCIDRs, ",") != "10.244.1.0/28,fd44:0:0:1::/64" || a.PublicIP != "192.168.50.1" || a.PublicIPv6 != "fd50::1" ||
		a.Backend != "vxlan" || a.VtepMAC != ownSpec.mac(family.IPv4).String() || a.VtepMACv6 != ownSpec.mac(family.IPv6).String() {
		t.Errorf("this node as read: %+v", a)
	}
	for node, want := range map[string][2]string{
		"node-c": {"ok", "missing route"},
		"node-d": {"no podCIDR yet", "-"},
		"node-e": {"annotations missing", "-"},
		"node-f": {`bad annotation: annotation flannel.alpha.coreos.com/public-ip "nowhere" is not an IPv4 address`, "-"},
		"node-g": {`skipped: backend "host-gw", this network uses "vxlan"`, "-"},
	} {
		if r := rows[node]; r.State != want[0] || r.Kernel != want[1] {
			t.Errorf("%s: state %q, kernel %q; want %q, %q", node, r.State, r.Kernel, want[0], want[1])
		}
	}

	code, out, stderr := f.run("leases", "--netns", f.ns.Path, "--subnet-file", f.subnet)
	for _, want := range []string{"network 10.244.0.0/16,fd44::/56, backend vxlan VNI 1 port 8472 (" + f.kube.netConf + "): 7 Nodes at https://127.0.0.1:",
		"NODE", "node-a (this node)  10.244.1.0/28,fd44:0:0:1::/64", "no podCIDR yet", "annotations missing"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("exit %d, table lacks %q:\n%s%s", code, want, out, stderr)
		}
	}
}

// TestKubeUsage: the Kubernetes API mode's flags are checked before any
// call, as subnetd checks them.
func TestKubeUsage(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--kube-subnet-mgr"}, "--kube-subnet-mgr needs this node's name: pass --node-name or set NODE_NAME"},
		{[]string{"--kube-subnet-mgr", "--node-name", "n", "--kube-annotation-prefix", "a/b/c"}, "--kube-annotation-prefix: bad annotation prefix"},
		{[]string{"--kube-subnet-mgr", "--node-name", "n", "--kube-api-url", "10.0.0.1:6443"}, "want a URL like https://HOST:6443"},
	} {
		for _, cmd := range []string{"leases", "doctor"} {
			if code, _, stderr := run(append([]string{cmd}, tt.args...)...); code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("%s %v: exit %d, %q; want 2 and %q", cmd, tt.args, code, stderr, tt.want)
			}
		}
	}
}
