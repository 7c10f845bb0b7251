package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	kubetest "github.com/cnisuite/cni/test/kube"
)

// manifest is one of conf/'s manifests that run subnetd on every node.
type manifest struct {
	file      string
	configMap string // holds cni-conf.json and net-conf.json
	// netConfigFlag names net-conf.json, a file of configMap's mount.
	netConfigFlag string
	modeArgs      []string // what subnetd needs in the manifest's mode
}

var (
	// kubeManifest is the default one: the node's subnet is its Node's pod
	// CIDRs, under kube-flannel.yml's names.
	kubeManifest = manifest{file: "kube-flannel.yml", configMap: "kube-flannel-cfg",
		netConfigFlag: "--net-config-path", modeArgs: []string{"--kube-subnet-mgr"}}
	// etcdManifest is for clusters that run flannel on etcd.
	etcdManifest = manifest{file: "subnetd-daemonset.yaml", configMap: "subnetd-cfg",
		netConfigFlag: "--net-config", modeArgs: []string{"--etcd-endpoints=$(ETCD_ENDPOINTS)", "--node-id=$(NODE_NAME)"}}
)

// objects decodes every document of r, in order; documents holding only
// comments are skipped.
func objects(t *testing.T, r io.Reader) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := yaml.NewYAMLOrJSONDecoder(r, 4096)
	for {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("document %d: %v", len(out)+1, err)
		}
		if len(obj) > 0 {
			out = append(out, &unstructured.Unstructured{Object: obj})
		}
	}
}

func (m manifest) objects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(filepath.Join(confDir, m.file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return objects(t, f)
}

// only returns the one object of kind in objs (named name, unless empty)
// as its Go type, refusing a field that type lacks: a misspelt key the API
// server would reject or, worse, ignore.
func only[T any](t *testing.T, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	var found *T
	for _, obj := range objs {
		if obj.GetKind() != kind || name != "" && obj.GetName() != name {
			continue
		}
		if found != nil {
			t.Fatalf("more than one %s %s", kind, name)
		}
		found = new(T)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(obj.Object, found, true); err != nil {
			t.Fatalf("%s %s: %v", kind, obj.GetName(), err)
		}
	}
	if found == nil {
		t.Fatalf("no %s %s", kind, name)
	}
	return found
}

// TestManifests: each manifest of conf/ that runs subnetd creates its
// Namespace before what lives in it, installs the same conflist and network
// config as conf/, and runs subnetd in its mode with what the flannel plugin
// and the node rely on.
func TestManifests(t *testing.T) {
	for _, m := range []manifest{kubeManifest, etcdManifest} {
		t.Run(m.file, func(t *testing.T) {
			objs := m.objects(t)
			namespaceFirst(t, objs)
			cfg := only[corev1.ConfigMap](t, objs, "ConfigMap", m.configMap)
			for key, file := range map[string]string{"cni-conf.json": flannelConflist, "net-conf.json": filepath.Join(confDir, "net-conf.json")} {
				want, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if !sameJSON(t, cfg.Data[key], string(want)) {
					t.Errorf("ConfigMap %s differs from %s:\n%s", key, file, cfg.Data[key])
				}
			}
			pod := only[appsv1.DaemonSet](t, objs, "DaemonSet", "").Spec.Template
			m.checkPod(t, pod.Spec)
			checkScrape(t, pod)
		})
	}
}

// namespaceFirst: the manifest starts with its Namespace and everything
// namespaced is in it, so that `kubectl apply -f`, which goes in file order,
// succeeds on a cluster without it.
func namespaceFirst(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	if len(objs) == 0 || objs[0].GetKind() != "Namespace" {
		t.Fatal("the first object is not the Namespace")
	}
	for _, obj := range objs[1:] {
		ns := obj.GetNamespace()
		if ns != "" && ns != objs[0].GetName() {
			t.Errorf("%s %s is in namespace %s, not %s", obj.GetKind(), obj.GetName(), ns, objs[0].GetName())
		}
	}
}

// checkPod: subnetd runs alone with the host's network, writes flannel's
// subnet.env, masquerades, answers its probes on its health port, knows
// its node's name, reads net-conf.json from the ConfigMap's mount, and
// finds the host's directories; the conflist comes from the same mount.
func (m manifest) checkPod(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	if !pod.HostNetwork || len(pod.Containers) != 1 {
		t.Fatalf("DaemonSet pod: hostNetwork %v, %d containers", pod.HostNetwork, len(pod.Containers))
	}
	subnetd := pod.Containers[0]
	mount := configMount(t, pod, subnetd, m.configMap)
	port := namedPort(t, subnetd, "metrics")
	want := append([]string{"--subnet-file=/run/flannel/subnet.env", "--ip-masq", "--data-dir=/var/lib/subnetd",
		"--healthz-ip=0.0.0.0", "--healthz-port=" + port.String(),
		m.netConfigFlag + "=" + path.Join(mount, "net-conf.json")}, m.modeArgs...)
	for _, arg := range want {
		if !slices.Contains(subnetd.Args, arg) {
			t.Errorf("subnetd args lack %s: %v", arg, subnetd.Args)
		}
	}
	for _, probe := range []*corev1.Probe{subnetd.ReadinessProbe, subnetd.LivenessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port.String() != "metrics" || probe.HTTPGet.Host != "" {
			t.Errorf("a probe does not ask the pod's address on the metrics port: %+v", probe)
		}
	}
	if !slices.ContainsFunc(subnetd.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Errorf("subnetd has no NODE_NAME from spec.nodeName: %v", subnetd.Env)
	}
	m.checkInstall(t, pod)
	var paths []string
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			paths = append(paths, v.HostPath.Path)
		}
	}
	for _, want := range []string{"/run/flannel", "/opt/cni/bin", "/etc/cni/net.d", "/var/lib/subnetd", "/run/xtables.lock"} {
		if !slices.Contains(paths, want) {
			t.Errorf("no hostPath volume %s in %v", want, paths)
		}
	}
}

// checkScrape: the pod template asks Prometheus to scrape subnetd's
// declared metrics port.
func checkScrape(t *testing.T, pod corev1.PodTemplateSpec) {
	t.Helper()
	port := namedPort(t, pod.Spec.Containers[0], "metrics")
	want := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": port.String(), "prometheus.io/path": "/metrics"}
	for k, v := range want {
		if pod.Annotations[k] != v {
			t.Errorf("pod annotation %s = %q, want %q", k, pod.Annotations[k], v)
		}
	}
}

// checkInstall: the one init container installs the plugins and the
// ConfigMap's conflist with cnictl (the image has no shell).
func (m manifest) checkInstall(t *testing.T, pod corev1.PodSpec) {
	t.Helper()
	if len(pod.InitContainers) != 1 || pod.InitContainers[0].Name != "install-cni" {
		t.Fatalf("init containers %v, want install-cni alone", pod.InitContainers)
	}
	install := pod.InitContainers[0]
	if !slices.Equal(install.Command, []string{"/usr/local/bin/cnictl", "install"}) {
		t.Errorf("install-cni runs %v", install.Command)
	}
	conflist := "--conflist=" + path.Join(configMount(t, pod, install, m.configMap), "cni-conf.json")
	for _, arg := range []string{conflist, "--from=/opt/cni/bin", "--cni-bin-dir=/host/opt/cni/bin", "--cni-conf-dir=/host/etc/cni/net.d"} {
		if !slices.Contains(install.Args, arg) {
			t.Errorf("install-cni args lack %s: %v", arg, install.Args)
		}
	}
}

// namedPort is the container port called name.
func namedPort(t *testing.T, c corev1.Container, name string) intstr.IntOrString {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return intstr.FromInt32(p.ContainerPort)
		}
	}
	t.Fatalf("container %s declares no port %s", c.Name, name)
	return intstr.IntOrString{}
}

// configMount returns where c mounts the ConfigMap name.
func configMount(t *testing.T, pod corev1.PodSpec, c corev1.Container, name string) string {
	t.Helper()
	for _, v := range pod.Volumes {
		if v.ConfigMap == nil || v.ConfigMap.Name != name {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name == v.Name {
				return path.Clean(vm.MountPath)
			}
		}
	}
	t.Fatalf("container %s does not mount ConfigMap %s", c.Name, name)
	return ""
}

// TestKubeManifestNames: conf/kube-flannel.yml keeps kube-flannel.yml's
// names and immutable selector, so that it replaces a flannel install, and
// grants subnetd's service account exactly what subnetd does with the API
// server; TestKubeManifestOnAPIServer checks the same against a real one.
func TestKubeManifestNames(t *testing.T) {
	objs := kubeManifest.objects(t)
	ds := only[appsv1.DaemonSet](t, objs, "DaemonSet", "kube-flannel-ds")
	if ds.Namespace != "kube-flannel" || !reflect.DeepEqual(ds.Spec.Selector.MatchLabels, map[string]string{"app": "flannel"}) {
		t.Errorf("DaemonSet in namespace %q with selector %v, want kube-flannel and app=flannel", ds.Namespace, ds.Spec.Selector.MatchLabels)
	}
	sa := only[corev1.ServiceAccount](t, objs, "ServiceAccount", "flannel")
	if pod := ds.Spec.Template.Spec; pod.ServiceAccountName != sa.Name || pod.AutomountServiceAccountToken != nil && !*pod.AutomountServiceAccountToken {
		t.Errorf("the pod runs as service account %q (token mounted: %v), want %s with its token", pod.ServiceAccountName, pod.AutomountServiceAccountToken, sa.Name)
	}
	role := only[rbacv1.ClusterRole](t, objs, "ClusterRole", "flannel")
	if !reflect.DeepEqual(role.Rules, subnetdRules) {
		t.Errorf("ClusterRole rules %+v, want %+v", role.Rules, subnetdRules)
	}
	binding := only[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding", "flannel")
	wantSubject := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: sa.Namespace, Name: sa.Name}}
	if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != role.Name || !reflect.DeepEqual(binding.Subjects, wantSubject) {
		t.Errorf("ClusterRoleBinding binds %+v to %+v, want ClusterRole %s to %+v", binding.Subjects, binding.RoleRef, role.Name, wantSubject)
	}
}

// subnetdRules is what subnetd does with the API server in Kubernetes mode:
// read and watch Nodes, patch its own Node's status subresource (flannel's
// annotations and the NetworkUnavailable condition).
var subnetdRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
}

func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		return false
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// flanneldInstall stands for a cluster running flannel from its
// kube-flannel.yml, as far as conf/kube-flannel.yml must replace it: the
// same namespace, ClusterRole (with flanneld's pods rule) and DaemonSet
// (its immutable selector, flanneld's container).
const flanneldInstall = `
apiVersion: v1
kind: Namespace
metadata:
  name: kube-flannel
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: flannel
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get"]
  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get", "list", "watch"]
  - apiGroups: [""]
    resources: ["nodes/status"]
    verbs: ["patch"]
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
spec:
  selector:
    matchLabels:
      app: flannel
  template:
    metadata:
      labels:
        app: flannel
    spec:
      hostNetwork: true
      containers:
        - name: kube-flannel
          image: flanneld
          command: ["/opt/bin/flanneld"]
          args: ["--ip-masq", "--kube-subnet-mgr"]
`

// TestKubeManifestOnAPIServer: a real API server accepts every object of
// conf/kube-flannel.yml, applied over a flannel install as `kubectl apply
// --server-side` does (strict field validation), and the result is the
// manifest's DaemonSet and ClusterRole, nothing of flanneld's left; then the
// manifest's service account may do what subnetd does (read and watch
// Nodes, patch its Node's annotations and conditions through the status
// subresource) and nothing else.
func TestKubeManifestOnAPIServer(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	c := kubetest.Start(t, kubetest.Options{})
	a := newApplier(t, c)
	a.apply(t, objects(t, strings.NewReader(flanneldInstall)))
	objs := kubeManifest.objects(t)
	a.apply(t, objs)

	wantDS := only[appsv1.DaemonSet](t, objs, "DaemonSet", "")
	ds, err := c.Client.AppsV1().DaemonSets(wantDS.Namespace).Get(t.Context(), wantDS.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := containerNames(ds.Spec.Template.Spec), containerNames(wantDS.Spec.Template.Spec); !slices.Equal(got, want) {
		t.Errorf("the DaemonSet's containers after the apply: %v, want %v", got, want)
	}
	role, err := c.Client.RbacV1().ClusterRoles().Get(t.Context(), only[rbacv1.ClusterRole](t, objs, "ClusterRole", "").Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(role.Rules, subnetdRules) {
		t.Errorf("ClusterRole rules after the apply: %+v, want %+v", role.Rules, subnetdRules)
	}

	sa := only[corev1.ServiceAccount](t, objs, "ServiceAccount", "")
	asSA := kubetest.ClientFor(t, c.ServiceAccountKubeconfig(t, sa.Namespace, sa.Name), c.NS)
	c.CreateNode(t, "node1", "10.244.1.0/24", "fd00:10:244:1::/64")
	c.CreateNode(t, "node2", "10.244.2.0/24", "fd00:10:244:2::/64")
	subnetdCalls(t, c, asSA)
	refusedCalls(t, asSA, sa.Namespace)
}

// applier applies objects of any kind, as kubectl does: it finds each
// kind's resource through the API server's discovery.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newApplier(t *testing.T, c *kubetest.Cluster) applier {
	t.Helper()
	groups, err := restmapper.GetAPIGroupResources(c.Client.Discovery())
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(kubetest.RESTConfigFor(t, c.Kubeconfig, c.NS))
	if err != nil {
		t.Fatal(err)
	}
	return applier{dyn: dyn, mapper: restmapper.NewDiscoveryRESTMapper(groups)}
}

// apply server-side applies objs in order under kubectl's field manager,
// so that a later apply removes what an earlier one set and it does not.
func (a applier) apply(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var r dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			r = a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		body, err := obj.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Patch(t.Context(), obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
			FieldManager: "kubectl", Force: new(true), FieldValidation: metav1.FieldValidationStrict})
		if err != nil {
			t.Fatalf("applying %s %s: %v", gvk.Kind, obj.GetName(), err)
		}
	}
}

func containerNames(pod corev1.PodSpec) []string {
	var names []string
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		names = append(names, c.Name)
	}
	return names
}

// subnetdCalls makes, as client, the calls subnetd makes: get its Node,
// list and watch all Nodes, publish flannel's annotations and clear
// NetworkUnavailable through the status subresource.
func subnetdCalls(t *testing.T, c *kubetest.Cluster, client kubernetes.Interface) {
	t.Helper()
	ctx := t.Context()
	// RBAC's authorizer learns of the new binding from a watch: wait for it.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := client.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("get node1 as the service account: %v", err)
		}
	}
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 2 {
		t.Fatalf("list nodes as the service account: %v, %d nodes", err, len(list.Items))
	}
	w, err := client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatalf("watch nodes as the service account: %v", err)
	}
	defer w.Stop()
	c.CreateNode(t, "node3")
	select {
	case ev := <-w.ResultChan():
		if n, ok := ev.Object.(*corev1.Node); ev.Type != watch.Added || !ok || n.Name != "node3" {
			t.Errorf("watching nodes: %s %v, want node3 added", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Error("watching nodes: no event for node3 within 10 s")
	}

	annotations := map[string]string{
		"flannel.alpha.coreos.com/backend-type":        "vxlan",
		"flannel.alpha.coreos.com/backend-data":        `{"VNI":1,"VtepMAC":"6a:1e:4f:00:00:01"}`,
		"flannel.alpha.coreos.com/public-ip":           "192.168.78.10",
		"flannel.alpha.coreos.com/kube-subnet-manager": "true",
	}
	node := patchStatus(t, client, map[string]any{"metadata": map[string]any{"annotations": annotations}})
	for k, v := range annotations {
		if node.Annotations[k] != v {
			t.Errorf("annotation %s = %q after the status patch, want %q", k, node.Annotations[k], v)
		}
	}
	now := metav1.Now()
	cond := corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: "SubnetdIsUp", Message: "subnetd runs on this node", LastTransitionTime: now, LastHeartbeatTime: now}
	node = patchStatus(t, client, map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if !slices.ContainsFunc(node.Status.Conditions, func(got corev1.NodeCondition) bool {
		return got.Type == cond.Type && got.Status == cond.Status && got.Reason == cond.Reason
	}) {
		t.Errorf("conditions after the status patch: %+v", node.Status.Conditions)
	}
}

// patchStatus strategic-merge-patches node1's status subresource.
func patchStatus(t *testing.T, client kubernetes.Interface, patch map[string]any) *corev1.Node {
	t.Helper()
	body, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	node, err := client.CoreV1().Nodes().Patch(t.Context(), "node1", types.StrategicMergePatchType, body, metav1.PatchOptions{}, "status")
	if err != nil {
		t.Fatalf("patching node1's status with %s as the service account: %v", body, err)
	}
	return node
}

// refusedCalls: as client, whatever subnetd does not do is forbidden: the
// Node's spec, writes to Nodes other than a status patch, pods (flanneld's
// role reads them) and secrets.
func refusedCalls(t *testing.T, client kubernetes.Interface, namespace string) {
	t.Helper()
	ctx := t.Context()
	nodes := client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, "node1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []struct {
		what string
		do   func() error
	}{
		{"patch a node's spec", func() error {
			_, err := nodes.Patch(ctx, "node1", types.StrategicMergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{})
			return err
		}},
		{"update a node's status", func() error { _, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); return err }},
		{"create a node", func() error {
			_, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node4"}}, metav1.CreateOptions{})
			return err
		}},
		{"delete a node", func() error { return nodes.Delete(ctx, "node2", metav1.DeleteOptions{}) }},
		{"list pods", func() error { _, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); return err }},
		{"get a pod", func() error {
			_, err := client.CoreV1().Pods(namespace).Get(ctx, "kube-flannel-ds-x", metav1.GetOptions{})
			return err
		}},
		{"get a secret", func() error {
			_, err := client.CoreV1().Secrets(namespace).Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
	} {
		if err := call.do(); !apierrors.IsForbidden(err) {
			t.Errorf("%s as the service account: %v, want forbidden", call.what, err)
		}
	}
}
