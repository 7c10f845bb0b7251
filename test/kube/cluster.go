package kubetest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// Options says where the control plane runs and what it assigns.
type Options struct {
	// NS is the namespace etcd and the Kubernetes components run in, and
	// Address the address of NS the API server listens on. To let node
	// namespaces reach the API server, give the underlay namespace that
	// joins them and its bridge's address (as test/e2e's overlay tests join
	// their nodes). Without NS, Start creates a namespace and the API server
	// listens on its 127.0.0.1, reachable only through Client and ClientFor.
	NS      *netnstest.NS
	Address string
	// ClusterCIDRs, when set, also runs kube-controller-manager's node IPAM,
	// which gives every Node a pod CIDR from each (a /24 from an IPv4 one, a
	// /64 from an IPv6 one), e.g. "10.244.0.0/16", "fd00:10:244::/56".
	ClusterCIDRs []string
	// ServiceCIDRs default to 10.96.0.0/16 and, when a cluster CIDR is IPv6,
	// fd00:96::/112, in the order of the cluster CIDRs' families.
	ServiceCIDRs []string
	// Kubelets: real kubelets join (Node.StartKubelet) and run pods made
	// through the API. kube-scheduler then runs too, and
	// kube-controller-manager's service-account controllers (serviceaccount,
	// serviceaccount-token, root-ca-cert-publisher), so that pods get their
	// namespace's default service account and its token, and nodelifecycle,
	// which lets pods onto a Node once it is Ready, and daemonset, which
	// runs a DaemonSet's pods on every Node.
	Kubelets bool
	// ExposeEtcd makes etcd listen on Address too (EtcdURL), for daemons
	// in node namespaces that keep their state in the cluster's etcd
	// (subnetd in etcd mode).
	ExposeEtcd bool
}

// Cluster is a running control plane. Start stops it when the test ends
// (kube-scheduler, kube-controller-manager, kube-apiserver, then etcd) and
// prints the end of each component's log if the test failed.
type Cluster struct {
	NS         *netnstest.NS
	URL        string               // the API server, e.g. https://192.168.77.1:37017
	CA         []byte               // PEM of the CA its serving certificate is signed by
	Kubeconfig string               // an admin kubeconfig (group system:masters), with URL and CA
	Client     kubernetes.Interface // an admin client connecting from NS
	// KubernetesService is the kubernetes Service's address and port, the
	// first of the first service CIDR, which pods find the API server by.
	KubernetesService netip.AddrPort
	EtcdURL           string // with Options.ExposeEtcd: etcd as node namespaces reach it, http://Address:port

	dir                             string
	apiAddr                         netip.AddrPort // where the API server listens
	pki                             *pki
	etcdAddr                        string // etcd's client address, host:port in NS
	etcd, apiserver, kcm, scheduler *process
}

// Start runs etcd and kube-apiserver (kube-controller-manager when
// opts.ClusterCIDRs or opts.Kubelets is set, kube-scheduler with the
// latter) and waits until the API server is ready. It skips the test
// without root or Debian's etcd-server.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("needs etcd (Debian's etcd-server; make deps installs it)")
	}
	opts, err = opts.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{NS: opts.NS, dir: t.TempDir()}
	if c.NS == nil {
		c.NS = netnstest.New(t, "kube")
	}
	c.etcd = &process{name: "etcd", log: filepath.Join(c.dir, "etcd.log")}
	c.apiserver = &process{name: "kube-apiserver", log: filepath.Join(c.dir, "kube-apiserver.log")}
	c.kcm = &process{name: "kube-controller-manager", log: filepath.Join(c.dir, "kube-controller-manager.log")}
	c.scheduler = &process{name: "kube-scheduler", log: filepath.Join(c.dir, "kube-scheduler.log")}
	t.Cleanup(func() {
		c.scheduler.stop(10 * time.Second)
		c.kcm.stop(10 * time.Second)
		c.apiserver.stop(20 * time.Second) // before etcd: without it, its shutdown retries for minutes
		c.etcd.stop(10 * time.Second)
		logTailsOnFailure(t, c.etcd, c.apiserver, c.kcm, c.scheduler)
	})
	if err := c.configure(t, etcdBin, opts); err != nil {
		t.Fatal(err)
	}
	c.startEtcd(t)
	c.StartAPIServer(t)
	if len(opts.ClusterCIDRs) > 0 || opts.Kubelets {
		c.startControllerManager(t, opts)
	}
	if opts.Kubelets {
		c.startScheduler(t)
	}
	return c
}

// withDefaults checks the options and fills in Address and ServiceCIDRs.
func (o Options) withDefaults() (Options, error) {
	switch {
	case o.NS == nil && o.Address == "":
		o.Address = "127.0.0.1"
	case o.NS == nil || o.Address == "":
		return o, errors.New("kubetest.Options: NS and Address go together")
	}
	if _, err := netip.ParseAddr(o.Address); err != nil {
		return o, fmt.Errorf("kubetest.Options.Address: %w", err)
	}
	if o.ExposeEtcd && o.NS == nil {
		return o, errors.New("kubetest.Options: ExposeEtcd needs NS and Address")
	}
	if len(o.ServiceCIDRs) > 0 {
		return o, nil
	}
	o.ServiceCIDRs = []string{"10.96.0.0/16"}
	for i, s := range o.ClusterCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return o, fmt.Errorf("kubetest.Options.ClusterCIDRs: %w", err)
		}
		switch {
		case p.Addr().Is6() && i == 0:
			o.ServiceCIDRs = []string{"fd00:96::/112"}
		case p.Addr().Is6():
			o.ServiceCIDRs = append(o.ServiceCIDRs, "fd00:96::/112")
		}
	}
	return o, nil
}

// configure picks the ports, makes the keys and certificates, writes the
// admin kubeconfig and sets the components' command lines.
func (c *Cluster) configure(t testing.TB, etcdBin string, opts Options) error {
	ports, err := freePorts(c.NS, "127.0.0.1", "127.0.0.1", opts.Address)
	if err != nil {
		return fmt.Errorf("picking ports in %s: %w", c.NS.Name, err)
	}
	advertise := opts.Address
	if netip.MustParseAddr(advertise).IsLoopback() {
		advertise = "192.0.2.1" // the API server refuses a loopback one; never dialled
	}
	ips := []net.IP{net.ParseIP(opts.Address), net.ParseIP("127.0.0.1"), net.ParseIP(advertise)}
	for i, s := range opts.ServiceCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("kubetest.Options.ServiceCIDRs: %w", err)
		}
		svc := p.Masked().Addr().Next() // the kubernetes Service's address
		if i == 0 {
			c.KubernetesService = netip.AddrPortFrom(svc, 443)
		}
		ips = append(ips, net.IP(svc.AsSlice()))
	}
	if c.pki, err = makePKI(c.dir, ips); err != nil {
		return fmt.Errorf("making the API server's keys: %w", err)
	}
	c.apiAddr = netip.AddrPortFrom(netip.MustParseAddr(opts.Address), uint16(ports[2]))
	c.URL = "https://" + c.apiAddr.String()
	c.CA = c.pki.caPEM
	c.Kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.URL, c.CA, "kubetest-admin", c.pki.adminToken); err != nil {
		return err
	}
	c.etcdAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	listen := "http://" + c.etcdAddr
	if opts.ExposeEtcd {
		c.EtcdURL = "http://" + net.JoinHostPort(opts.Address, strconv.Itoa(ports[0]))
		listen += "," + c.EtcdURL
	}
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	c.etcd.argv = []string{etcdBin, "--name", "kubetest", "--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", listen, "--advertise-client-urls", "http://" + c.etcdAddr,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "kubetest=" + peerURL, "--unsafe-no-fsync", "--logger", "zap"}
	c.apiserver.argv = append([]string{Binary(t, "kube-apiserver"),
		"--bind-address", opts.Address, "--secure-port", strconv.Itoa(ports[2]), "--advertise-address", advertise,
		"--service-cluster-ip-range", strings.Join(opts.ServiceCIDRs, ",")}, c.apiserverFlags()...)
	client, err := clientIn(c.Kubeconfig, c.NS)
	c.Client = client
	return err
}

// apiserverFlags are the API server's flags that do not depend on Options.
func (c *Cluster) apiserverFlags() []string {
	return []string{"--etcd-servers", "http://" + c.etcdAddr,
		"--tls-cert-file", c.pki.certFile, "--tls-private-key-file", c.pki.keyFile, "--cert-dir", c.dir,
		"--token-auth-file", c.pki.tokenFile, "--authorization-mode", "Node,RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", c.pki.saKeyFile, "--service-account-signing-key-file", c.pki.saKeyFile,
		"--allow-privileged", "--kubelet-preferred-address-types", "InternalIP", "--profiling=false",
		// Stop in ~2 s, not after the 60 s the watches of clients (kube-controller-manager)
		// would otherwise be given: HTTP shutdown then waits 2 s for them.
		"--shutdown-send-retry-after"}
}

// freePorts returns a TCP port free on each address inside ns, all distinct.
func freePorts(ns *netnstest.NS, addrs ...string) ([]int, error) {
	var ports []int
	err := netns.Do(ns.Path, func() error {
		for _, a := range addrs {
			l, err := net.Listen("tcp", net.JoinHostPort(a, "0"))
			if err != nil {
				return err
			}
			defer l.Close() // held until all are picked, so that none is picked twice
			ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		}
		return nil
	})
	return ports, err
}

func (c *Cluster) startEtcd(t testing.TB) {
	t.Helper()
	if err := c.etcd.start(c.NS); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "etcd healthy", 30*time.Second, func() error {
		if code, body := c.NS.HTTP(c.etcdAddr, "GET", "/health", nil); code != 200 {
			return fmt.Errorf("GET /health: %d %s", code, body)
		}
		return nil
	})
}

// StopAPIServer stops kube-apiserver, keeping etcd and its data (an outage).
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	c.apiserver.stop(20 * time.Second)
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, with the
// same flags, certificates and tokens, and waits until it is ready.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	if err := c.apiserver.start(c.NS); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "kube-apiserver ready", 90*time.Second, func() error {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(t.Context())
		if err != nil {
			return fmt.Errorf("GET /readyz: %w %s", err, body)
		}
		return nil
	})
}

// startControllerManager runs kube-controller-manager with the node IPAM
// controller when there are cluster CIDRs, the service-account ones for
// kubelets; it needs no readiness of its own: Nodes getting pod CIDRs
// (WaitPodCIDRs) or pods starting is what tests wait for.
func (c *Cluster) startControllerManager(t testing.TB, opts Options) {
	t.Helper()
	var controllers []string
	c.kcm.argv = []string{Binary(t, "kube-controller-manager"), "--kubeconfig", c.Kubeconfig,
		"--service-cluster-ip-range", strings.Join(opts.ServiceCIDRs, ","),
		"--leader-elect=false", "--secure-port=0", "--profiling=false"}
	if len(opts.ClusterCIDRs) > 0 {
		controllers = append(controllers, "nodeipam")
		c.kcm.argv = append(c.kcm.argv, "--allocate-node-cidrs", "--cluster-cidr", strings.Join(opts.ClusterCIDRs, ","))
	}
	if opts.Kubelets {
		// nodelifecycle lifts the not-ready taint kubelet registers its Node with.
		controllers = append(controllers, "serviceaccount", "serviceaccount-token", "root-ca-cert-publisher", "nodelifecycle", "daemonset")
		c.kcm.argv = append(c.kcm.argv, "--root-ca-file", c.pki.caFile, "--service-account-private-key-file", c.pki.saKeyFile)
	}
	c.kcm.argv = append(c.kcm.argv, "--controllers", strings.Join(controllers, ","))
	if err := c.kcm.start(c.NS); err != nil {
		t.Fatal(err)
	}
}

// startScheduler runs kube-scheduler, which places the pods tests create
// without a nodeName; it serves no port.
func (c *Cluster) startScheduler(t testing.TB) {
	t.Helper()
	c.scheduler.argv = []string{Binary(t, "kube-scheduler"), "--kubeconfig", c.Kubeconfig,
		"--leader-elect=false", "--secure-port=0", "--profiling=false"}
	if err := c.scheduler.start(c.NS); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls check until it succeeds, failing the test when timeout
// passes or a component exits first.
func (c *Cluster) waitFor(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	waitFor(t, what, timeout, []*process{c.etcd, c.apiserver, c.kcm, c.scheduler}, check)
}

// waitFor polls check every 200 ms until it succeeds, failing the test when
// timeout passes or one of procs (those started) exits first.
func waitFor(t testing.TB, what string, timeout time.Duration, procs []*process, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		for _, p := range procs {
			if p.cmd == nil {
				continue
			}
			if done, perr := p.exited(); done {
				t.Fatalf("waiting for %s: %s exited (%v); the end of its log follows", what, p.name, perr)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
