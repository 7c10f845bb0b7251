package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/subnet"
)

// Watch calls fn with every node's lease after the informer's first list,
// then after each change of one, until ctx ends. Changes that come while
// fn runs make one call. One Watch at a time.
func (s *Source) Watch(ctx context.Context, fn func([]subnet.Entry)) {
	select {
	case <-ctx.Done():
		return
	case <-s.informer.HasSyncedChecker().Done():
	}
	for {
		fn(s.snapshot())
		select {
		case <-ctx.Done():
			return
		case <-s.changed:
		}
	}
}

func (s *Source) snapshot() []subnet.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.view.entries)
}

// leases is every node's lease, kept dense so that a snapshot after an
// event is one copy, not a walk of a map of every Node.
type leases struct {
	index   map[string]int // node name -> its position in entries and names
	entries []subnet.Entry
	names   []string
}

func (l *leases) get(name string) (subnet.Entry, bool) {
	i, ok := l.index[name]
	if !ok {
		return subnet.Entry{}, false
	}
	return l.entries[i], true
}

func (l *leases) set(name string, e subnet.Entry) {
	if i, ok := l.index[name]; ok {
		l.entries[i] = e
		return
	}
	l.index[name] = len(l.entries)
	l.entries, l.names = append(l.entries, e), append(l.names, name)
}

// remove moves the last lease into name's place; false when name has none.
func (l *leases) remove(name string) bool {
	i, ok := l.index[name]
	if !ok {
		return false
	}
	last := len(l.entries) - 1
	l.entries[i], l.names[i] = l.entries[last], l.names[last]
	l.index[l.names[i]] = i
	l.entries, l.names = l.entries[:last], l.names[:last]
	delete(l.index, name)
	return true
}

// update applies one Node, added or changed, to the view: the informer's
// handlers keep it incrementally, so an event costs one Node's decoding.
func (s *Source) update(obj any) {
	n, ok := obj.(*cachedNode)
	if !ok {
		return
	}
	e, err := n.lease, n.err
	s.mu.Lock()
	defer s.mu.Unlock()
	why := ""
	if err != nil && !notSubnetNode(err) {
		why = err.Error()
	}
	if why != "" && why != s.skips[n.Name] {
		s.o.Log.Warn("skipping a node's lease", "node", n.Name, "reason", why)
	}
	if why == "" {
		delete(s.skips, n.Name)
	} else {
		s.skips[n.Name] = why
	}
	if err != nil {
		s.drop(n.Name)
		return
	}
	if old, ok := s.view.get(n.Name); ok && old.Subnets == e.Subnets && string(old.Value) == string(e.Value) {
		return // a change of something else: heartbeat, labels, status
	}
	s.rev++
	e.Rev = s.rev
	s.view.set(n.Name, e)
	s.signal()
}

// remove drops a deleted Node from the view.
func (s *Source) remove(obj any) {
	name, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.skips, name)
	s.drop(name)
}

// drop removes a node from the view; mu held.
func (s *Source) drop(name string) {
	if s.view.remove(name) {
		s.signal()
	}
}

func (s *Source) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// ErrNoPodCIDR marks a Node without a pod CIDR yet: kube-controller-manager
// has not assigned one.
var ErrNoPodCIDR = errors.New("no pod cidr")

// ErrUnpublished marks a Node on which no daemon published a lease: it has
// no <prefix>kube-subnet-manager "true" annotation.
var ErrUnpublished = errors.New("no kube-subnet-manager annotation")

// notSubnetNode: a Node whose daemon publishes no lease (yet); not worth a
// log line.
func notSubnetNode(err error) bool {
	return errors.Is(err, ErrNoPodCIDR) || errors.Is(err, ErrUnpublished)
}

// NodeLease reads a Node's lease as every node reads it: its pod CIDRs of
// the network's families, and the lease JSON of its annotations under
// prefix, its name as NodeID. ErrNoPodCIDR or ErrUnpublished when it holds
// none (yet), ErrPodCIDR when its pod CIDRs do not fit the network, else
// the annotation that is missing or malformed.
func NodeLease(n *corev1.Node, prefix string, c subnet.Config) (subnet.Entry, error) {
	ann, err := newAnnotations(prefix)
	if err != nil {
		return subnet.Entry{}, err
	}
	return ann.entry(n, c)
}

func (s *Source) entry(n *corev1.Node) (subnet.Entry, error) { return s.ann.entry(n, s.o.Network) }

func (a annotations) entry(n *corev1.Node, c subnet.Config) (subnet.Entry, error) {
	subs, err := podSubnets(n, c)
	switch {
	case errors.Is(err, ErrNoPodCIDR):
		return subnet.Entry{}, err
	case n.Annotations[a.managed] != "true":
		return subnet.Entry{}, ErrUnpublished
	case err != nil:
		return subnet.Entry{}, fmt.Errorf("%w: %w", ErrPodCIDR, err)
	}
	attrs, err := a.attrs(n.Name, n.Annotations, c)
	if err != nil {
		return subnet.Entry{}, err
	}
	v, err := json.Marshal(attrs)
	if err != nil {
		return subnet.Entry{}, fmt.Errorf("encoding its lease: %w", err)
	}
	return subnet.Entry{Subnets: subs, Value: v}, nil
}

// podSubnets reads a Node's pod CIDRs (spec.podCIDRs, or the older
// spec.podCIDR), one per family, and returns those of the network's
// families; ErrNoPodCIDR when it has none.
func podSubnets(n *corev1.Node, c subnet.Config) (subnet.Subnets, error) {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	if len(cidrs) == 0 {
		return subnet.Subnets{}, ErrNoPodCIDR
	}
	var got [2]netip.Prefix
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil || p != p.Masked() || p.Addr().Zone() != "" {
			return subnet.Subnets{}, fmt.Errorf("pod CIDR %q is not a network address", s)
		}
		if f := family.OfPrefix(p); !got[f].IsValid() {
			got[f] = p
		} else {
			return subnet.Subnets{}, fmt.Errorf("pod CIDRs %v: more than one %s", cidrs, f)
		}
	}
	var out subnet.Subnets
	for _, f := range c.Families() {
		if !got[f].IsValid() {
			return subnet.Subnets{}, fmt.Errorf("no %s pod CIDR (spec.podCIDRs %v), but the network config has %s %s: give kube-controller-manager a --cluster-cidr of each family",
				f, cidrs, f, c.NetworkOf(f))
		}
		*out.Of(f) = got[f]
	}
	return out, nil
}

// cachedNode is what the informer keeps of a Node: its lease as read from
// it, or why it has none, and of this node's own Node what Acquire and Check
// read. About 400 bytes, where a decoded Node with its annotations takes
// 2 kB and more: the cache of a 5000-Node cluster stays ~2 MB.
type cachedNode struct {
	metav1.TypeMeta
	metav1.ObjectMeta // name, UID and resource version: the informer's keys
	lease             subnet.Entry
	err               error
	own               *corev1.Node // slimmed; nil but for this node's Node
}

func (c *cachedNode) DeepCopyObject() runtime.Object {
	cp := *c
	return &cp
}

// keep is the informer's transform: a decoded Node becomes its cachedNode,
// which the handlers take as they are. Anything else (a tombstone, or a
// cachedNode handed back by the informer) passes unchanged.
func (s *Source) keep(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	c := &cachedNode{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}
	c.lease, c.err = s.entry(n)
	if n.Name == s.o.NodeName {
		own := *s.slim(n) // a copy: n may be an item of a page of a list
		c.own = &own
	}
	return c, nil
}

// keptList is a list of Nodes as keep made them, for the informer.
type keptList struct {
	metav1.TypeMeta
	metav1.ListMeta
	Items []runtime.Object
}

func (l *keptList) DeepCopyObject() runtime.Object {
	cp := *l
	cp.Items = slices.Clone(l.Items)
	return &cp
}

// listPages lists the Nodes a page at a time when the informer asks for
// pages, each Node made by keep as its page comes, so that a list of
// thousands of Nodes never sits decoded in memory whole. The API server
// ignores the page size of the informer's first list, which takes any
// resource version ("0", from its cache): that one is asked for at the
// latest, which it reads from etcd in pages. A relist at a resource
// version the informer saw (no page size: the API server's cache serves
// it, not older than that) goes as asked.
func listPages(ctx context.Context, h *health, api NodeAPI, keep cache.TransformFunc, opts metav1.ListOptions) (runtime.Object, error) {
	if opts.ResourceVersion == "0" && opts.Limit > 0 {
		opts.ResourceVersion = ""
	}
	out := &keptList{}
	for {
		page, err := retried(ctx, h, func(ctx context.Context) (*corev1.NodeList, error) { return api.List(ctx, opts) })
		if err != nil {
			return nil, err
		}
		if out.ResourceVersion == "" {
			out.ResourceVersion = page.ResourceVersion // the first page's: the list's snapshot
		}
		for i := range page.Items {
			k, err := keep(&page.Items[i])
			if err != nil {
				return nil, err
			}
			out.Items = append(out.Items, k.(runtime.Object))
		}
		if page.Continue == "" {
			return out, nil
		}
		opts.Continue, opts.ResourceVersion = page.Continue, ""
	}
}

// slim keeps of a Node what Acquire and Check read: name, its annotations
// under the prefix, pod CIDRs, the NetworkUnavailable condition. It trims
// the Node in place, which client-go allows (the informer owns each
// decoded object).
func (s *Source) slim(n *corev1.Node) *corev1.Node {
	ann := n.Annotations
	maps.DeleteFunc(ann, func(k, _ string) bool { return !strings.HasPrefix(k, s.ann.prefix) })
	if len(ann) == 0 {
		ann = nil
	}
	var conds []corev1.NodeCondition
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			conds = []corev1.NodeCondition{c}
		}
	}
	*n = corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Annotations: ann},
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status:     corev1.NodeStatus{Conditions: conds},
	}
	return n
}
