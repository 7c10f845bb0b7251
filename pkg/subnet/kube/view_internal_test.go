package kube

import (
	"errors"
	"maps"
	"slices"
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
	got, err := s.slim(n)
	if err != nil {
		t.Fatal(err)
	}
	if got != any(n) {
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
	tomb := cache.DeletedFinalStateUnknown{Key: "a"}
	if v, _ := s.slim(tomb); v != any(tomb) {
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
