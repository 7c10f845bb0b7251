package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NodeAPI is what the source asks of the Kubernetes API: list and watch
// Nodes (RBAC: nodes list, watch) and patch a Node's status subresource
// (nodes/status patch), as flanneld does. client-go's typed Nodes client
// has these methods, so its fake serves unit tests.
type NodeAPI interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	// PatchStatus applies a strategic merge patch to the Node's status
	// subresource, which also takes its metadata's annotations.
	PatchStatus(ctx context.Context, name string, patch []byte) (*corev1.Node, error)
}

// scheme knows core/v1 only: client-go's clientset scheme registers every
// API group, which costs every subnetd ~10 MB of RSS at start.
var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

func init() {
	if err := corev1.AddToScheme(scheme); err != nil {
		panic(err) // a registration conflict in this one group: a build defect
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
}

// REST is the NodeAPI of an API server, on client-go's REST client, in
// protobuf (Nodes are large).
type REST struct {
	c *rest.RESTClient
}

// NewREST makes the client from a configuration (clientcmd's, or
// rest.InClusterConfig's).
func NewREST(cfg *rest.Config) (*REST, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = codecs.WithoutConversion()
	c.ContentType = runtime.ContentTypeProtobuf
	c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	if c.UserAgent == "" {
		c.UserAgent = "subnetd"
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("building the Kubernetes API client: %w", err)
	}
	return &REST{c: rc}, nil
}

func (r *REST) List(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	out := &corev1.NodeList{}
	err := r.c.Get().Resource("nodes").VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(out)
	return out, err
}

func (r *REST) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	req := r.c.Get().Resource("nodes").VersionedParams(&opts, metav1.ParameterCodec)
	if opts.TimeoutSeconds != nil {
		req = req.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	return req.Watch(ctx)
}

func (r *REST) PatchStatus(ctx context.Context, name string, patch []byte) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := r.c.Patch(types.StrategicMergePatchType).Resource("nodes").Name(name).SubResource("status").
		Body(patch).Do(ctx).Into(out)
	return out, err
}

// PodNode returns the node a pod runs on: flanneld's way to its node name
// when NODE_NAME is unset (RBAC: pods get).
func (r *REST) PodNode(ctx context.Context, namespace, name string) (string, error) {
	pod := &corev1.Pod{}
	if err := r.c.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(pod); err != nil {
		return "", fmt.Errorf("reading pod %s/%s for its node: %w", namespace, name, err)
	}
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s is not scheduled on a node", namespace, name)
	}
	return pod.Spec.NodeName, nil
}

// RESTConfig is the API server and credentials of flanneld's flags:
// kubeconfig (its server replaced by apiURL when given), else the pod's
// service account (at apiURL when given: the way around a service IP not
// routed yet).
func RESTConfig(apiURL, kubeconfig string) (*rest.Config, error) {
	var c *rest.Config
	var err error
	if kubeconfig != "" {
		if c, err = clientcmd.BuildConfigFromFlags(apiURL, kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig-file: %w", err)
		}
	} else {
		if c, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("no --kubeconfig-file, and no service account of a pod to use instead (%w): pass --kubeconfig-file", err)
		}
		if apiURL != "" {
			c.Host = apiURL
		}
	}
	c.QPS, c.Burst = clientQPS, clientBurst
	return c, nil
}

// The client's rate limit. client-go's default burst of 10 requests is
// spent by the pages of the first list of a 5000-Node cluster (10 of 500),
// and the node's publication then waited ~200 ms for a token; 100 covers
// the start of a 50000-Node cluster. After the start a node makes a
// request a minute, so the rate stays client-go's.
const (
	clientQPS   = 5
	clientBurst = 100
)
