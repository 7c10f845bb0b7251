package kube_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/kube"
)

const p = kube.DefaultPrefix + "/"

// fakeNodes is the fake clientset's Nodes, which cannot stream the initial
// list of a watch: the informer lists.
type fakeNodes struct{ corev1client.NodeInterface }

func (fakeNodes) IsWatchListSemanticsUnSupported() bool { return true }

// fixture is a Source for node "me" on a fake API server.
type fixture struct {
	t   *testing.T
	c   *fake.Clientset
	src *kube.Source
	log *testutil.SyncBuffer
}

var me = subnet.Attrs{PublicIP: netip.MustParseAddr("192.168.1.10"), BackendType: "vxlan",
	BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"0a:00:00:00:00:0a"}`)}

func newFixture(t *testing.T, network string, nodes ...runtime.Object) *fixture {
	t.Helper()
	c, err := subnet.ParseConfig([]byte(network))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, c: fake.NewClientset(nodes...), log: &testutil.SyncBuffer{}}
	f.src, err = kube.New(kube.Options{API: fakeNodes{f.c.CoreV1().Nodes()}, NodeName: "me", Network: c, Node: me,
		SetNodeNetworkUnavailable: true, Timeout: 5 * time.Second, Log: slog.New(slog.NewTextHandler(f.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.src.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func node(name string, ann map[string]string, cidrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidrs[0], cidrs
	}
	return n
}

// flanneldAnnotations is what flanneld writes on a vxlan IPv4 node.
func flanneldAnnotations(ip, mac string) map[string]string {
	return map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan",
		p + "backend-data": `{"VNI":1,"VtepMAC":"` + mac + `"}`, p + "public-ip": ip}
}

func (f *fixture) get(name string) *corev1.Node {
	f.t.Helper()
	n, err := f.c.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fixture) patch(name, patch string) {
	f.t.Helper()
	if _, err := f.c.CoreV1().Nodes().Patch(context.Background(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// patches counts the writes the source made.
func (f *fixture) patches() int {
	n := 0
	for _, a := range f.c.Actions() {
		if a.GetVerb() == "patch" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

const v4net = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

// TestNotAssigned: a Node without a pod CIDR, or no Node, is
// ErrNotAssigned with flanneld's words, the node's name and the fixes; the
// source writes nothing, and Acquire succeeds once a CIDR is there.
func TestNotAssigned(t *testing.T) {
	f := newFixture(t, v4net, node("me", nil))
	_, err := f.src.Acquire(context.Background())
	for _, want := range []string{`node "me" pod cidr not assigned`, "kubeadm init --pod-network-cidr=10.244.0.0/16",
		"kube-controller-manager --allocate-node-cidrs=true --cluster-cidr=10.244.0.0/16", "kubectl patch node me"} {
		if !errors.Is(err, subnet.ErrNotAssigned) || !strings.Contains(err.Error(), want) {
			t.Errorf("Acquire: %v; want ErrNotAssigned saying %q", err, want)
		}
	}
	if n := f.patches(); n != 0 {
		t.Errorf("%d writes without a pod CIDR", n)
	}
	f.patch("me", `{"spec":{"podCIDR":"10.244.7.0/24","podCIDRs":["10.244.7.0/24"]}}`)
	eventually(t, "the lease once assigned", func() bool {
		l, err := f.src.Acquire(context.Background())
		return err == nil && l.Subnets.V4 == netip.MustParsePrefix("10.244.7.0/24")
	})

	g := newFixture(t, v4net)
	if _, err := g.src.Acquire(context.Background()); !errors.Is(err, subnet.ErrNotAssigned) || !strings.Contains(err.Error(), `node "me" not found`) {
		t.Errorf("Acquire without a Node: %v", err)
	}
}

// TestAcquirePublishes: Acquire writes flanneld's annotations and the
// NetworkUnavailable condition through nodes/status, once: a second
// Acquire, with them in place, writes nothing.
func TestAcquirePublishes(t *testing.T) {
	f := newFixture(t, v4net, node("me", map[string]string{"other": "kept"}, "10.244.3.0/24"))
	l, err := f.src.Acquire(context.Background())
	if err != nil || l.Subnets != (subnet.Subnets{V4: netip.MustParsePrefix("10.244.3.0/24")}) {
		t.Fatalf("Acquire: %+v, %v", l, err)
	}
	n := f.get("me")
	want := flanneldAnnotations("192.168.1.10", "0a:00:00:00:00:0a")
	want["other"] = "kept"
	for k, v := range want {
		if n.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, n.Annotations[k], v)
		}
	}
	if len(n.Annotations) != len(want) {
		t.Errorf("annotations %v, want %v", n.Annotations, want)
	}
	if c := condition(n); c == nil || c.Status != corev1.ConditionFalse || c.Reason != "SubnetdIsUp" {
		t.Errorf("NetworkUnavailable condition %+v, want False", c)
	}
	if got := f.patches(); got != 1 {
		t.Errorf("%d writes, want one patch of nodes/status", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := &views{}
	go f.src.Watch(ctx, v.take)
	eventually(t, "the informer to see the annotations", func() bool { return slices.Equal(v.nodes(), []string{"me"}) })
	if _, err := f.src.Acquire(ctx); err != nil || f.patches() != 1 {
		t.Errorf("Acquire again: %v, %d writes in all; want none more", err, f.patches())
	}
	if c := f.src.Network(); c.SubnetLen != 24 {
		t.Errorf("Network().SubnetLen %d after acquiring a /24", c.SubnetLen)
	}
}

func condition(n *corev1.Node) *corev1.NodeCondition {
	for i, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// TestOverwrite: public-ip-overwrite is published instead of the node's
// address; a malformed one is not, and is logged once.
func TestOverwrite(t *testing.T) {
	f := newFixture(t, v4net, node("me", map[string]string{p + "public-ip-overwrite": "203.0.113.7"}, "10.244.3.0/24"))
	l, err := f.src.Acquire(context.Background())
	if err != nil || l.Attrs.PublicIP != netip.MustParseAddr("203.0.113.7") || f.get("me").Annotations[p+"public-ip"] != "203.0.113.7" {
		t.Fatalf("Acquire with an overwrite: %+v, %v; annotations %v", l, err, f.get("me").Annotations)
	}
	f.patch("me", `{"metadata":{"annotations":{"`+p+`public-ip-overwrite":"bogus"}}}`)
	eventually(t, "the own address published again", func() bool {
		l, err = f.src.Check(context.Background(), l)
		return err == nil && f.get("me").Annotations[p+"public-ip"] == "192.168.1.10"
	})
	for range 3 {
		if _, err := f.src.Check(context.Background(), l); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(f.log.String(), "ignoring a public IP overwrite"); n != 1 {
		t.Errorf("the bad overwrite logged %d times, want once:\n%s", n, f.log)
	}
}

// TestPodCIDRMismatch: pod CIDRs the network config cannot take are
// ErrPodCIDR, naming what to fix.
func TestPodCIDRMismatch(t *testing.T) {
	dual := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`
	for _, tc := range []struct {
		network string
		cidrs   []string
		want    string
	}{
		{v4net, []string{"10.99.1.0/24"}, "pod CIDR 10.99.1.0/24 is outside the network 10.244.0.0/16"},
		{dual, []string{"10.244.1.0/24"}, "no IPv6 pod CIDR"},
		{dual, []string{"10.244.1.0/24", "fd00:99::/64"}, "outside the network fd00:10:244::/56"},
		{v4net, []string{"10.244.1.1/24"}, "not a network address"},
	} {
		f := newFixture(t, tc.network, node("me", nil, tc.cidrs...))
		_, err := f.src.Acquire(context.Background())
		if !errors.Is(err, kube.ErrPodCIDR) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v on %s: %v; want ErrPodCIDR saying %q", tc.cidrs, tc.network, err, tc.want)
		}
	}
}

// TestCheck: annotations removed or changed are written again; a Node
// gone or with other pod CIDRs is a lost lease.
func TestCheck(t *testing.T) {
	f := newFixture(t, v4net, node("me", nil, "10.244.3.0/24"))
	l, err := f.src.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.patch("me", `{"metadata":{"annotations":{"`+p+`public-ip":"10.0.0.1","`+p+`backend-data":null}}}`)
	eventually(t, "the annotations written again", func() bool {
		_, err := f.src.Check(context.Background(), l)
		a := f.get("me").Annotations
		return err == nil && a[p+"public-ip"] == "192.168.1.10" && a[p+"backend-data"] == string(me.BackendData)
	})

	if err := f.c.CoreV1().Nodes().Delete(context.Background(), "me", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the lease lost with the Node", func() bool {
		_, err := f.src.Check(context.Background(), l)
		return errors.Is(err, subnet.ErrLeaseLost)
	})
	if _, err := f.c.CoreV1().Nodes().Create(context.Background(), node("me", nil, "10.244.9.0/24"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the lease lost to new pod CIDRs", func() bool {
		_, err := f.src.Check(context.Background(), l)
		return errors.Is(err, subnet.ErrLeaseLost) && strings.Contains(err.Error(), "10.244.9.0/24")
	})
}

// views collects what Watch hands over.
type views struct {
	mu   sync.Mutex
	last []subnet.Entry
	n    int
}

func (v *views) take(es []subnet.Entry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.last, v.n = es, v.n+1
}

func (v *views) entries() []subnet.Entry {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.last
}

// byNode is the last view by NodeID.
func (v *views) byNode() map[string]subnet.Attrs {
	out := map[string]subnet.Attrs{}
	for _, e := range v.entries() {
		var a subnet.Attrs
		if err := json.Unmarshal(e.Value, &a); err == nil {
			out[a.NodeID] = a
		}
	}
	return out
}

func (v *views) nodes() []string {
	var names []string
	for n := range v.byNode() {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// TestWatch: the view holds every node that publishes a lease and has a
// pod CIDR, flanneld's or subnetd's; one whose annotations are missing or
// malformed is left out and logged once per change of them; the view
// follows additions, fixes and deletions from the one initial list.
func TestWatch(t *testing.T) {
	f := newFixture(t, v4net,
		node("me", nil, "10.244.3.0/24"),
		node("flanneld", flanneldAnnotations("192.168.1.11", "0a:00:00:00:00:0b"), "10.244.4.0/24"),
		node("bare", map[string]string{p + "kube-subnet-manager": "true"}, "10.244.5.0/24"),
		node("badip", flanneldAnnotations("not-an-ip", "0a:00:00:00:00:0c"), "10.244.6.0/24"),
		node("plain", nil, "10.244.7.0/24"),
		node("nocidr", flanneldAnnotations("192.168.1.14", "0a:00:00:00:00:0e")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := &views{}
	go f.src.Watch(ctx, v.take)
	eventually(t, "the first view", func() bool { return slices.Equal(v.nodes(), []string{"flanneld"}) })
	if a := v.byNode()["flanneld"]; a.PublicIP != netip.MustParseAddr("192.168.1.11") || string(a.BackendData) != `{"VNI":1,"VtepMAC":"0a:00:00:00:00:0b"}` {
		t.Errorf("flanneld's lease %+v", a)
	}
	l, err := f.src.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "this node in the view", func() bool { return slices.Equal(v.nodes(), []string{"flanneld", "me"}) })
	for _, e := range v.entries() {
		if own := e.Subnets == l.Subnets; f.src.Owns(l, e) != own {
			t.Errorf("Owns(%v) = %v, want %v", e.Subnets, !own, own)
		}
	}

	f.patch("badip", `{"metadata":{"labels":{"unrelated":"change"}}}`)
	f.patch("bare", `{"metadata":{"annotations":{"`+p+`backend-type":"vxlan"}}}`)
	f.patch("badip", `{"metadata":{"annotations":{"`+p+`public-ip":"192.168.1.13"}}}`)
	eventually(t, "the fixed node in the view", func() bool { return slices.Equal(v.nodes(), []string{"badip", "flanneld", "me"}) })
	log := f.log.String()
	if n := strings.Count(log, `node=badip reason="annotation `+p+`public-ip \"not-an-ip\" is not an IPv4 address"`); n != 1 {
		t.Errorf("badip's skip logged %d times, want once:\n%s", n, log)
	}
	if !strings.Contains(log, `node=bare reason="annotation `+p+`backend-type is missing"`) ||
		!strings.Contains(log, `node=bare reason="annotation `+p+`public-ip \"\" is not an IPv4 address"`) {
		t.Errorf("bare's skips, one per change of its annotations, not logged:\n%s", log)
	}
	if strings.Contains(log, "node=plain") || strings.Contains(log, "node=nocidr") {
		t.Errorf("a node without a lease logged:\n%s", log)
	}

	if err := f.c.CoreV1().Nodes().Delete(ctx, "flanneld", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted node gone", func() bool { return slices.Equal(v.nodes(), []string{"badip", "me"}) })
	lists := 0
	for _, a := range f.c.Actions() {
		if a.GetVerb() == "list" {
			lists++
		}
	}
	if lists != 1 {
		t.Errorf("%d lists of Nodes, want the informer's one", lists)
	}
}

// TestWatchCoalesces: a burst of changes while the callback runs makes one
// more call, with the newest view.
func TestWatchCoalesces(t *testing.T) {
	f := newFixture(t, v4net)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	v := &views{}
	first := true
	go f.src.Watch(ctx, func(es []subnet.Entry) {
		v.take(es)
		if first {
			first = false
			<-release
		}
	})
	eventually(t, "the first view", func() bool { v.mu.Lock(); defer v.mu.Unlock(); return v.n == 1 })
	for i := range 20 {
		n := node("n"+strconv.Itoa(i), flanneldAnnotations("192.168.2.1", "0a:00:00:00:01:00"), "10.244."+strconv.Itoa(10+i)+".0/24")
		if _, err := f.c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the informer to take the burst", func() bool {
		list, _ := f.c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return len(list.Items) == 20
	})
	time.Sleep(100 * time.Millisecond)
	close(release)
	eventually(t, "the newest view", func() bool { return len(v.nodes()) == 20 })
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.n > 3 {
		t.Errorf("%d calls for a burst of 20 changes during one call, want at most 3", v.n)
	}
}

// TestNetworkLength: Network reports the length of the node's pod CIDR,
// kube-controller-manager's choice, for its family only.
func TestNetworkLength(t *testing.T) {
	f := newFixture(t, v4net, node("me", nil, "10.244.3.64/26"))
	if c := f.src.Network(); c.SubnetLen != 24 {
		t.Errorf("SubnetLen %d before Acquire, want net-conf's 24", c.SubnetLen)
	}
	if _, err := f.src.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := f.src.Network(); c.SubnetLen != 26 || c.IPv6SubnetLen != 0 {
		t.Errorf("SubnetLen %d, IPv6SubnetLen %d after acquiring a /26 on an IPv4 network", c.SubnetLen, c.IPv6SubnetLen)
	}
}
