package cnictl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/kube"
)

// kubeOpts are subnetd's flags of its Kubernetes API mode (flanneld's
// --kube-subnet-mgr), so that an operator gives cnictl subnetd's.
type kubeOpts struct {
	on                                                bool
	apiURL, kubeconfig, prefix, netConfPath, nodeName string
	// dial, when set, opens the connections to the API server: tests reach
	// one that listens in a network namespace.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (o *kubeOpts) flags(fs *flag.FlagSet) {
	fs.BoolVar(&o.on, "kube-subnet-mgr", false, "subnetd runs on the Kubernetes API: read Nodes, not etcd (the etcd flags are not used but --etcd-timeout, each API call's deadline, as subnetd's)")
	fs.StringVar(&o.apiURL, "kube-api-url", "", "subnetd's --kube-api-url: the API server's URL, over the kubeconfig's")
	fs.StringVar(&o.kubeconfig, "kubeconfig-file", "", "subnetd's --kubeconfig-file; empty: the pod's service account (in-cluster)")
	fs.StringVar(&o.prefix, "kube-annotation-prefix", kube.DefaultPrefix, "subnetd's --kube-annotation-prefix")
	fs.StringVar(&o.netConfPath, "net-config-path", "/etc/kube-flannel/net-conf.json", "subnetd's --net-config-path")
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's Node, as subnetd's NODE_NAME")
}

// check rejects flags that cannot make a client (usage errors, exit 2).
func (o kubeOpts) check() error {
	if !o.on {
		return nil
	}
	if err := kube.CheckPrefix(o.prefix); err != nil {
		return usagef("--kube-annotation-prefix: %v", err)
	}
	if u, err := url.Parse(o.apiURL); o.apiURL != "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
		return usagef("--kube-api-url %q: want a URL like https://HOST:6443", o.apiURL)
	}
	if o.nodeName == "" {
		return usagef("--kube-subnet-mgr needs this node's name: pass --node-name or set NODE_NAME, as for subnetd")
	}
	return nil
}

// restConfig is subnetd's client configuration, each call bounded by timeout.
func (o kubeOpts) restConfig(timeout time.Duration) (*rest.Config, error) {
	c, err := kube.RESTConfig(o.apiURL, o.kubeconfig)
	if err != nil {
		return nil, err
	}
	c.Timeout, c.UserAgent = timeout, "cnictl"
	if o.dial != nil {
		c.Dial = o.dial
	}
	return c, nil
}

// readNetConf reads --net-config-path as subnetd does.
func (o kubeOpts) readNetConf() ([]byte, subnet.Config, error) {
	raw, err := os.ReadFile(o.netConfPath)
	if err != nil {
		return nil, subnet.Config{}, err
	}
	c, err := subnet.ParseConfig(raw)
	return raw, c, err
}

// kubeCluster is what the API server holds about the network: every Node
// read as subnetd reads it, and as a cluster of leases (those of the Nodes
// that hold one) for the overlay's audit.
type kubeCluster struct {
	cluster
	nodes   []kubeNode
	own     *corev1.Node   // this node's Node, nil when there is none
	ownSubs subnet.Subnets // its pod CIDRs, when they fit the network
	ownErr  error          // why they do not (kube.OwnSubnets)
}

// kubeNode is one Node: its lease, or why it has none.
type kubeNode struct {
	name     string
	podCIDRs []string
	lease    leaseInfo
	err      error // of kube.NodeLease
}

// readKube lists the Nodes (one call) and reads each with pkg/subnet/kube's
// own rules: the lease its annotations publish, peers judged under the
// network config with this node's subnet lengths (kube.OwnNetwork).
func readKube(ctx context.Context, cfg *rest.Config, o kubeOpts, raw []byte, nc subnet.Config) (*kubeCluster, error) {
	api, err := kube.NewREST(cfg)
	if err != nil {
		return nil, err
	}
	list, err := api.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	kc := &kubeCluster{}
	for i := range list.Items {
		n := &list.Items[i]
		if n.Name == o.nodeName {
			kc.own = n
			kc.ownSubs, kc.ownErr = kube.OwnSubnets(n, nc)
		}
		kn := kubeNode{name: n.Name, podCIDRs: podCIDRs(n)}
		var e subnet.Entry
		if e, kn.err = kube.NodeLease(n, o.prefix, nc); kn.err == nil {
			kn.lease = leaseInfo{Entry: e}
			kn.lease.err = json.Unmarshal(e.Value, &kn.lease.attrs)
			kc.leases = append(kc.leases, kn.lease)
		}
		kc.nodes = append(kc.nodes, kn)
	}
	slices.SortFunc(kc.nodes, func(a, b kubeNode) int { return strings.Compare(a.name, b.name) })
	own := kube.OwnNetwork(nc, kc.ownSubs)
	kc.raw, kc.cfg = raw, &own
	return kc, nil
}

func podCIDRs(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) == 0 && n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return n.Spec.PodCIDRs
}

// ownNode is this node's entry, nil when its Node is missing.
func (kc *kubeCluster) ownNode(name string) *kubeNode {
	i := slices.IndexFunc(kc.nodes, func(k kubeNode) bool { return k.name == name })
	if i < 0 {
		return nil
	}
	return &kc.nodes[i]
}

// state says in a few words whether subnetd programs a Node as a peer,
// and if not why: the reasons of kube.NodeLease, then those of
// leaseInfo.peers (subnet.LeasePeers and the conflicts with this node).
func (k kubeNode) state(ov overlayAudit) string {
	switch {
	case errors.Is(k.err, kube.ErrNoPodCIDR):
		return "no podCIDR yet"
	case errors.Is(k.err, kube.ErrUnpublished):
		return "annotations missing"
	case errors.Is(k.err, kube.ErrPodCIDR):
		return "bad podCIDR: " + strings.TrimPrefix(k.err.Error(), kube.ErrPodCIDR.Error()+": ")
	case k.err != nil:
		return "bad annotation: " + k.err.Error()
	}
	if err, bad := ov.bad[k.lease.Subnets]; bad {
		return "skipped: " + err.Error()
	}
	return "ok"
}

// apiProblem names why the list of Nodes failed, with what to do; lacks
// are the rights the credentials miss, when known.
func apiProblem(err error, host string, lacks []string) Finding {
	f := Finding{Severity: Error, Evidence: []string{err.Error()}}
	switch {
	case apierrors.IsUnauthorized(err):
		f.Message = "the API server at " + host + " refuses the credentials (401 Unauthorized): subnetd with them can neither read nor publish any Node"
		f.Fix = "the token or certificate is expired, revoked, or of a deleted service account: give subnetd (and cnictl) a valid --kubeconfig-file; " +
			"in a pod, recreate the pod so that kubelet mounts a fresh service account token"
	case apierrors.IsForbidden(err):
		f.Message = "the API server at " + host + " forbids these credentials to list nodes (403 Forbidden)"
		if len(lacks) > 0 {
			f.Message += "; they lack " + strings.Join(lacks, ", ")
		}
		f.Message += ": subnetd with them cannot follow the other nodes"
		f.Fix = rbacFix
	case !isAnswer(err):
		f.Message = "the Kubernetes API at " + host + " does not answer: subnetd can neither see its Node nor the others; the node and overlay checks are skipped"
		f.Fix = "check that kube-apiserver runs and that this host reaches it (`kubectl --kubeconfig <file> get --raw /readyz`); give cnictl subnetd's --kubeconfig-file and --kube-api-url"
	default:
		f.Message = "the API server at " + host + " failed to list nodes"
		f.Fix = "read kube-apiserver's log for the cause"
	}
	return f
}

// isAnswer reports whether err is the API server's answer, not its absence.
func isAnswer(err error) bool {
	var s apierrors.APIStatus
	return errors.As(err, &s)
}

const rbacFix = "bind the ClusterRole of kube-flannel.yml to subnetd's service account: it grants nodes get, list and watch, and nodes/status patch " +
	"(`kubectl apply -f kube-flannel.yml`, or `kubectl create clusterrolebinding flannel --clusterrole flannel --serviceaccount kube-flannel:flannel`)"

// needed are the rights subnetd uses: list and watch Nodes (get too, as
// flanneld), patch their status subresource (its annotations).
var needed = []authorizationv1.ResourceAttributes{
	{Verb: "get", Resource: "nodes"}, {Verb: "list", Resource: "nodes"}, {Verb: "watch", Resource: "nodes"},
	{Verb: "patch", Resource: "nodes", Subresource: "status"},
}

// authzScheme knows the one type missingRights sends.
var authzScheme = runtime.NewScheme()

func init() {
	if err := authorizationv1.AddToScheme(authzScheme); err != nil {
		panic(err) // a registration conflict in one group: a build defect
	}
}

// missingRights asks the API server which of the needed rights the
// credentials lack (SelfSubjectAccessReview, which every authenticated
// identity may create), as "verb resource" words.
func missingRights(ctx context.Context, cfg *rest.Config) ([]string, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath, c.GroupVersion = "/apis", &authorizationv1.SchemeGroupVersion
	c.NegotiatedSerializer = serializer.NewCodecFactory(authzScheme).WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, err
	}
	var lacks []string
	for _, ra := range needed {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}
		out := &authorizationv1.SelfSubjectAccessReview{}
		if err := rc.Post().Resource("selfsubjectaccessreviews").Body(review).Do(ctx).Into(out); err != nil {
			return nil, fmt.Errorf("asking the API server for the rights of these credentials: %w", err)
		}
		if !out.Status.Allowed {
			lacks = append(lacks, ra.Verb+" "+strings.TrimSuffix(ra.Resource+"/"+ra.Subresource, "/"))
		}
	}
	return lacks, nil
}
