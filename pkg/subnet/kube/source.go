// Package kube is subnetd's Kubernetes API mode (a subnet.Source), what
// flanneld's --kube-subnet-mgr does: this node's subnets are its Node's
// spec.podCIDRs, which kube-controller-manager assigns; every node
// publishes its public addresses and VTEP as annotations of its Node
// (flanneld's, so that subnetd and flanneld nodes share one overlay), and
// follows the others' through a Node informer.
//
// It reaches the API through NodeAPI: REST, or client-go's typed Nodes
// client in tests. It must not import k8s.io/client-go/kubernetes, whose
// scheme of every API group would cost every subnetd its RSS.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/cnisuite/cni/pkg/subnet"
)

// ErrPodCIDR marks a pod CIDR of this node that the network config cannot
// take: outside its Network, or a family missing on a dual-stack network.
var ErrPodCIDR = errors.New("pod cidr does not fit the network config")

// Options configure a Source.
type Options struct {
	API      NodeAPI
	NodeName string
	Prefix   string        // of the annotations; "" is DefaultPrefix
	Network  subnet.Config // validated (net-conf.json)
	// Node is what this node publishes: its public addresses, backend
	// type and data. NodeID is set to NodeName.
	Node subnet.Attrs
	// SetNodeNetworkUnavailable sets the Node's NetworkUnavailable
	// condition False once its annotations are written, as flanneld does.
	SetNodeNetworkUnavailable bool
	// Timeout bounds each API call, and Acquire's wait for the first list
	// of Nodes.
	Timeout time.Duration
	Log     *slog.Logger
}

// Source is the Kubernetes API as a subnet.Source. Run must run for the
// other methods to see Nodes.
type Source struct {
	o        Options
	ann      annotations
	health   health
	store    cache.Store
	informer cache.Controller

	mu      sync.Mutex
	network subnet.Config // o.Network with the lengths of this node's pod CIDRs
	view    leases
	skips   map[string]string // node name -> why its lease is skipped, as last logged
	warned  string            // the last overwrite annotation problem logged
	rev     int64
	changed chan struct{} // a change of view since Watch last took it
}

var _ subnet.Source = (*Source)(nil)

// New validates the options and sets up the Node informer.
func New(o Options) (*Source, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	ann, err := newAnnotations(o.Prefix)
	if err != nil {
		return nil, err
	}
	if o.NodeName == "" {
		return nil, errors.New("no node name: set NODE_NAME to this node's name (in a DaemonSet, from the field spec.nodeName)")
	}
	o.Node.NodeID = o.NodeName
	s := &Source{o: o, ann: ann, network: o.Network, view: leases{index: map[string]int{}}, skips: map[string]string{},
		changed: make(chan struct{}, 1)}
	s.store, s.informer = cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: listWatch(o.API, &s.health, s.keep),
		ObjectType:    &corev1.Node{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { s.update(obj) },
			UpdateFunc: func(_, obj any) { s.update(obj) },
			DeleteFunc: s.remove,
		},
		Transform: s.keep,
	})
	return s, nil
}

// Run runs the informer until ctx ends.
func (s *Source) Run(ctx context.Context) { s.informer.RunWithContext(ctx) }

// Network is the network config, with the subnet lengths of this node's
// pod CIDRs once acquired: kube-controller-manager's --node-cidr-mask-size
// decides them, and net-conf.json's SubnetLen is ignored, as flanneld does.
func (s *Source) Network() subnet.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.network
}

// Acquire reads this node's pod CIDRs from the informer's cache and
// publishes the node's annotations (and NetworkUnavailable False) when
// they differ. ErrNotAssigned while the Node has no pod CIDR, or no Node.
func (s *Source) Acquire(ctx context.Context) (subnet.Lease, error) {
	n, err := s.ownNode(ctx)
	if err != nil {
		return subnet.Lease{}, err
	}
	subs, err := OwnSubnets(n, s.o.Network)
	if err != nil {
		return subnet.Lease{}, err
	}
	l := subnet.Lease{Subnets: subs, Attrs: s.own(n)}
	if err := s.publish(ctx, n, l.Attrs); err != nil {
		return subnet.Lease{}, err
	}
	s.mu.Lock()
	s.network = OwnNetwork(s.o.Network, subs)
	s.mu.Unlock()
	return l, nil
}

// Check confirms from the cache that the Node still has l's pod CIDRs
// (ErrLeaseLost when not, or when the Node is gone) and writes its
// annotations again when someone changed or removed them. It fails while
// the informer cannot reach the API server.
func (s *Source) Check(ctx context.Context, l subnet.Lease) (subnet.Lease, error) {
	if err := s.health.check(); err != nil {
		return subnet.Lease{}, err
	}
	n, ok := s.cached()
	if !ok {
		return subnet.Lease{}, fmt.Errorf("%w: node %q was deleted", subnet.ErrLeaseLost, s.o.NodeName)
	}
	subs, err := OwnSubnets(n, s.o.Network)
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("%w: %w", subnet.ErrLeaseLost, err)
	}
	if subs != l.Subnets {
		return subnet.Lease{}, fmt.Errorf("%w: node %q now has pod CIDRs %s", subnet.ErrLeaseLost, s.o.NodeName, subs)
	}
	l.Attrs = s.own(n)
	return l, s.publish(ctx, n, l.Attrs)
}

// Owns reports whether e is this node's lease as l published it.
func (s *Source) Owns(l subnet.Lease, e subnet.Entry) bool {
	v, err := json.Marshal(l.Attrs)
	return err == nil && e.Subnets == l.Subnets && string(e.Value) == string(v)
}

// Release keeps the annotations, as flanneld does: the pod CIDR stays the
// Node's, and so does the lease.
func (s *Source) Release(context.Context, subnet.Lease) error { return nil }

// ownNode waits for the informer's first list, at most Timeout, and
// returns this node's Node from it.
func (s *Source) ownNode(ctx context.Context) (*corev1.Node, error) {
	wait, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	select {
	case <-s.informer.HasSyncedChecker().Done():
	case <-wait.Done():
		if err := s.health.check(); err != nil {
			return nil, fmt.Errorf("no list of Nodes yet: %w", err)
		}
		return nil, fmt.Errorf("no list of Nodes from the Kubernetes API within %v", s.o.Timeout)
	}
	n, ok := s.cached()
	if !ok {
		return nil, fmt.Errorf("node %q not found, so its %w: set NODE_NAME to this node's name as `kubectl get nodes` shows it, or wait until kubelet registers the node", s.o.NodeName, subnet.ErrNotAssigned)
	}
	return n, nil
}

func (s *Source) cached() (*corev1.Node, bool) {
	obj, ok, err := s.store.GetByKey(s.o.NodeName)
	if err != nil || !ok {
		return nil, false
	}
	c, ok := obj.(*cachedNode)
	if !ok || c.own == nil {
		return nil, false
	}
	return c.own, true
}

// OwnSubnets is a node's subnets, its Node's pod CIDRs, which must fit
// the network: ErrNotAssigned while it has none, ErrPodCIDR when they do
// not fit; either says what to do.
func OwnSubnets(n *corev1.Node, c subnet.Config) (subnet.Subnets, error) {
	subs, err := podSubnets(n, c)
	if errors.Is(err, ErrNoPodCIDR) {
		return subs, fmt.Errorf("node %q %w: its Node has no spec.podCIDR. Assign pod CIDRs: kubeadm init --pod-network-cidr=%s, or kube-controller-manager --allocate-node-cidrs=true --cluster-cidr=%s, or by hand: kubectl patch node %s -p '{\"spec\":{\"podCIDR\":\"<a free subnet of %s>\"}}'; ready by itself once assigned",
			n.Name, subnet.ErrNotAssigned, networks(c), networks(c), n.Name, networks(c))
	}
	if err != nil {
		return subs, fmt.Errorf("node %q: %w: %w", n.Name, ErrPodCIDR, err)
	}
	for _, f := range c.Families() {
		p, net := *subs.Of(f), c.NetworkOf(f)
		if !net.Contains(p.Addr()) || p.Bits() < net.Bits() {
			return subnet.Subnets{}, fmt.Errorf("node %q: %w: pod CIDR %s is outside the network %s of the network config (--net-config-path); make the network the cluster's --cluster-cidr", n.Name, ErrPodCIDR, p, net)
		}
	}
	return subs, nil
}

// OwnNetwork is the network config c as the node of subnets own judges its
// peers: its subnet lengths are those of own, which kube-controller-manager's
// --node-cidr-mask-size decides; net-conf.json's SubnetLen is ignored, as
// flanneld does.
func OwnNetwork(c subnet.Config, own subnet.Subnets) subnet.Config {
	if own.V4.IsValid() {
		c.SubnetLen = own.V4.Bits()
	}
	if own.V6.IsValid() {
		c.IPv6SubnetLen = own.V6.Bits()
	}
	return c
}

// networks is the config's networks, as --cluster-cidr takes them.
func networks(c subnet.Config) string {
	var out []string
	for _, f := range c.Families() {
		out = append(out, c.NetworkOf(f).String())
	}
	return strings.Join(out, ",")
}

// own is what this node publishes, with an operator's overwrites; a bad
// overwrite is logged once.
func (s *Source) own(n *corev1.Node) subnet.Attrs {
	a, err := s.ann.overwritten(s.o.Node, n.Annotations, s.o.Network)
	why := ""
	if err != nil {
		why = err.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if why != "" && why != s.warned {
		s.o.Log.Warn("ignoring a public IP overwrite", "node", n.Name, "error", err)
	}
	s.warned = why
	return a
}

// publish patches the Node's status subresource with the annotations and
// condition that differ from what the cache holds; nothing when none does.
func (s *Source) publish(ctx context.Context, n *corev1.Node, a subnet.Attrs) error {
	want := s.ann.publish(a, s.o.Network)
	maps.DeleteFunc(want, func(k, v string) bool {
		cur, ok := n.Annotations[k]
		return ok && cur == v
	})
	patch := map[string]any{}
	if len(want) > 0 {
		patch["metadata"] = map[string]any{"annotations": want}
	}
	if s.o.SetNodeNetworkUnavailable && !networkAvailable(n) {
		now := metav1.Now()
		patch["status"] = map[string]any{"conditions": []corev1.NodeCondition{{Type: corev1.NodeNetworkUnavailable,
			Status: corev1.ConditionFalse, Reason: "SubnetdIsUp", Message: "subnetd is running on this node",
			LastTransitionTime: now, LastHeartbeatTime: now}}}
	}
	if len(patch) == 0 {
		return nil
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("encoding the patch of node %q: %w", n.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	if _, err := s.o.API.PatchStatus(ctx, n.Name, body); err != nil {
		return fmt.Errorf("writing the annotations of node %q (RBAC: nodes/status patch): %w", n.Name, err)
	}
	s.o.Log.Info("published this node's lease on its Node", "node", n.Name, "patch", string(body))
	return nil
}

func networkAvailable(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return c.Status == corev1.ConditionFalse
		}
	}
	return false
}
