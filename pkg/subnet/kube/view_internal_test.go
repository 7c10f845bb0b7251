package kube

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/cnisuite/cni/pkg/subnet"
)

// TestSlimInPlace: the transform trims the decoded Node itself, keeping
// what the source reads, rather than allocating a second Node.
func TestSlimInPlace(t *testing.T) {
	ann, err := newAnnotations(DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	s := &Source{ann: ann}
	unavailable := corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "u", ResourceVersion: "7", Labels: map[string]string{"l": "v"},
			Annotations: map[string]string{DefaultPrefix + "/public-ip": "1.2.3.4", "other/x": "y"}},
		Spec: corev1.NodeSpec{PodCIDR: "10.0.1.0/24", PodCIDRs: []string{"10.0.1.0/24"}, ProviderID: "p"},
		Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"img"}}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady}, unavailable}},
	}
	if got := s.slim(n); got != n {
		t.Fatal("slim returned a new Node; want the decoded one trimmed")
	}
	want := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "u", ResourceVersion: "7",
			Annotations: map[string]string{DefaultPrefix + "/public-ip": "1.2.3.4"}},
		Spec:   corev1.NodeSpec{PodCIDR: "10.0.1.0/24", PodCIDRs: []string{"10.0.1.0/24"}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{unavailable}},
	}
	if n.Name != want.Name || n.UID != want.UID || n.ResourceVersion != want.ResourceVersion || n.Labels != nil ||
		!maps.Equal(n.Annotations, want.Annotations) || n.Spec.ProviderID != "" || !slices.Equal(n.Spec.PodCIDRs, want.Spec.PodCIDRs) ||
		n.Status.Images != nil || len(n.Status.Conditions) != 1 || n.Status.Conditions[0] != unavailable {
		t.Errorf("slimmed Node %+v, want %+v", n, want)
	}
}

// TestKeep: the informer keeps of another node's Node its lease alone, and
// of this node's Node also what Acquire reads.
func TestKeep(t *testing.T) {
	ann, err := newAnnotations(DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	c, err := subnet.ParseConfig([]byte(`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	s := &Source{ann: ann, o: Options{NodeName: "me", Network: c}}
	annotated := func(name string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "3", Annotations: map[string]string{
			DefaultPrefix + "/kube-subnet-manager": "true", DefaultPrefix + "/backend-type": "vxlan",
			DefaultPrefix + "/backend-data": `{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"}`, DefaultPrefix + "/public-ip": "192.168.1.1",
			"other/x": "y"}},
			Spec: corev1.NodeSpec{PodCIDR: "10.0.1.0/24", PodCIDRs: []string{"10.0.1.0/24"}}}
	}
	for _, name := range []string{"peer", "me"} {
		n := annotated(name)
		want, wantErr := s.entry(n)
		obj, err := s.keep(n)
		if err != nil {
			t.Fatal(err)
		}
		k, ok := obj.(*cachedNode)
		if !ok || k.Name != name || k.ResourceVersion != "3" || k.err != wantErr || k.lease.Subnets != want.Subnets ||
			string(k.lease.Value) != string(want.Value) {
			t.Fatalf("kept %s as %+v, want its lease %+v (%v)", name, obj, want, wantErr)
		}
		if own := name == "me"; (k.own != nil) != own || own && (k.own.Annotations["other/x"] != "" || k.own.Spec.PodCIDR != "10.0.1.0/24") {
			t.Errorf("kept %s's Node %+v", name, k.own)
		}
		if again, _ := s.keep(k); again != any(k) {
			t.Error("keep changed what it kept")
		}
	}
	tomb := cache.DeletedFinalStateUnknown{Key: "a"}
	if v, _ := s.keep(tomb); v != any(tomb) {
		t.Error("a tombstone was changed")
	}
}

// TestWatchStraight: the reflector reads the API server's watch channel
// itself, and the health counts the watch open until the reflector stops it.
func TestWatchStraight(t *testing.T) {
	w := watch.NewFake()
	h := &health{}
	h.called(errors.New("refused"))
	tw := trackWatch(w, h)
	if tw.ResultChan() != w.ResultChan() {
		t.Error("the watch's events pass through another channel")
	}
	if err := h.check(); err != nil {
		t.Errorf("health with a watch open: %v", err)
	}
	tw.Stop()
	tw.Stop()
	if err := h.check(); err == nil {
		t.Error("health up after the watch stopped and the last call failed")
	}
}

// TestLeases: removing a lease keeps every other one findable.
func TestLeases(t *testing.T) {
	l := leases{index: map[string]int{}}
	for i, name := range []string{"a", "b", "c", "d"} {
		l.set(name, subnet.Entry{Rev: int64(i)})
	}
	l.set("b", subnet.Entry{Rev: 10})
	if !l.remove("a") || l.remove("a") || !l.remove("d") {
		t.Fatal("remove reported wrongly")
	}
	want := map[string]int64{"b": 10, "c": 2}
	if len(l.entries) != len(want) || len(l.names) != len(want) || len(l.index) != len(want) {
		t.Fatalf("leases %+v, want those of %v", l, want)
	}
	for name, rev := range want {
		if e, ok := l.get(name); !ok || e.Rev != rev {
			t.Errorf("lease of %s: %+v %v, want rev %d", name, e, ok, rev)
		}
	}
	if _, ok := l.get("a"); ok {
		t.Error("a removed lease is found")
	}
}

// pagedNodes serves Nodes two per page, and records what was asked.
type pagedNodes struct {
	NodeAPI
	nodes []corev1.Node
	asked []metav1.ListOptions
}

func (p *pagedNodes) List(_ context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	p.asked = append(p.asked, opts)
	from, _ := strconv.Atoi(opts.Continue)
	to := len(p.nodes)
	if opts.Limit > 0 {
		to = min(to, from+int(opts.Limit))
	}
	out := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: strconv.Itoa(100 + len(p.asked))},
		Items: slices.Clone(p.nodes[from:to])}
	if to < len(p.nodes) {
		out.Continue = strconv.Itoa(to)
	}
	return out, nil
}

// TestListPages: the informer's first list (any resource version, pages
// asked for) comes a page at a time at the latest resource version, its
// Nodes kept as keep makes them; a relist at a seen resource version goes
// as asked.
func TestListPages(t *testing.T) {
	ann, err := newAnnotations(DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	s := &Source{ann: ann, o: Options{NodeName: "n1"}}
	api := &pagedNodes{}
	for i := range 5 {
		api.nodes = append(api.nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n" + strconv.Itoa(i),
			Annotations: map[string]string{"other/x": strings.Repeat("y", 1000)}}})
	}
	list, err := listPages(context.Background(), &health{}, api, s.keep, metav1.ListOptions{ResourceVersion: "0", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	l, ok := list.(*keptList)
	if !ok || l.ResourceVersion != "101" || len(l.Items) != 5 {
		t.Fatalf("list %+v, want 5 Nodes at the first page's resource version 101", list)
	}
	for i, obj := range l.Items {
		if k, ok := obj.(*cachedNode); !ok || k.Name != "n"+strconv.Itoa(i) || (k.own != nil) != (i == 1) {
			t.Errorf("item %d: %+v", i, obj)
		}
	}
	want := []metav1.ListOptions{{Limit: 2}, {Limit: 2, Continue: "2"}, {Limit: 2, Continue: "4"}}
	if !slices.Equal(api.asked, want) {
		t.Errorf("asked %+v, want %+v", api.asked, want)
	}
	api.asked = nil
	if _, err := listPages(context.Background(), &health{}, api, s.keep, metav1.ListOptions{ResourceVersion: "221"}); err != nil {
		t.Fatal(err)
	}
	if want := []metav1.ListOptions{{ResourceVersion: "221"}}; !slices.Equal(api.asked, want) {
		t.Errorf("relist asked %+v, want %+v", api.asked, want)
	}
}
