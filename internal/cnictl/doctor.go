package cnictl

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/netns"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// Severity orders findings; `cnictl doctor` exits with the worst one's value:
// 0 every check ok, 1 at least one warning, 2 at least one error. (A doctor
// that could not run at all, e.g. bad flags, exits 2 as well, or 1 on an
// internal failure, like every cnictl command.)
type Severity int

const (
	OK Severity = iota
	Warn
	Error
)

func (s Severity) String() string { return [...]string{"ok", "warn", "error"}[s] }

// MarshalJSON spells the severity as a word: machines match on "error", not 2.
func (s Severity) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Finding is one thing doctor learned about the node.
type Finding struct {
	Severity Severity `json:"severity"`
	Check    string   `json:"check"`
	Message  string   `json:"message"`
	Evidence []string `json:"evidence,omitempty"`
	Fix      string   `json:"fix,omitempty"`
}

// doctorOpts are the node's paths; tests point them at temp dirs and a
// namespace they made.
type doctorOpts struct {
	confDir, binDir, subnetFile, dataDir, healthz, netns, sysctlDir string
	client                                                          *http.Client
	etcd                                                            etcdOpts
	kube                                                            kubeOpts
}

// node is what the checks share: options and what earlier checks parsed.
type node struct {
	doctorOpts
	confs []conflist   // every parsed network configuration, by file name
	env   *envfile.Env // subnet.env when present and valid
	// cluster is etcd's config and leases, nil when etcd does not answer:
	// the checks that need it then report nothing, the etcd check says why.
	cluster  *cluster
	ownLease *leaseInfo // this node's live lease, matching subnet.env
	// With --kube-subnet-mgr: net-conf.json as read, and the Nodes (whose
	// leases are cluster's), nil when the file or the API failed.
	netConf    *subnet.Config
	netConfRaw []byte
	kc         *kubeCluster
}

// store is where subnetd keeps the leases: the checks of one apply to it only.
type store int

const (
	anyStore store = iota
	etcdStore
	kubeStore
)

func (n *node) store() store {
	if n.kube.on {
		return kubeStore
	}
	return etcdStore
}

// nodeID is this node's identity in the leases: subnetd's node ID in etcd,
// its Node's name on the Kubernetes API.
func (n *node) nodeID() string {
	if n.kube.on {
		return n.kube.nodeName
	}
	return n.etcd.nodeID()
}

// check is one named inspection; it returns at least one finding when it
// applies, none when it does not (e.g. no flannel: no subnet.env check).
type check struct {
	name  string
	inNS  bool  // runs inside --netns
	store store // the lease store it applies to; anyStore: both
	run   func(n *node) []Finding
	about string
}

func checks() []check {
	return []check{
		{name: "cni-config", run: checkConfig, about: "a network configuration in the conf dir"},
		{name: "cni-plugins", run: checkPlugins, about: "every plugin the configuration names is in the bin dir"},
		{name: "subnet-env", run: checkSubnetEnv, about: "subnetd's subnet.env exists and parses"},
		{name: "subnetd-ready", run: checkReady, about: "subnetd's /readyz answers ready"},
		{name: "ipam-store", inNS: true, run: checkIPAM, about: "host-local stores have room or reclaimable addresses"},
		{name: "bridge-address", inNS: true, run: checkBridgeAddr, about: "cni0's address is in FLANNEL_SUBNET"},
		{name: "forward-policy", inNS: true, run: checkForward, about: "FORWARD accepts the pod network"},
		{name: "br-netfilter", inNS: true, run: checkBrNetfilter, about: "br_netfilter is loaded"},
		{name: "pod-mtu", inNS: true, run: checkMTU, about: "cni0 and pods' MTU fit FLANNEL_MTU"},
		{name: "vxlan-checksum", inNS: true, run: checkChecksum, about: "flannel.1 has tx checksum offload off"},
		{name: "etcd", store: etcdStore, run: checkEtcd, about: "etcd answers at --etcd-endpoints"},
		{name: "network-config", store: etcdStore, run: checkNetConfig, about: "<prefix>/config exists, parses and agrees with subnet.env"},
		{name: "node-lease", store: etcdStore, run: checkNodeLease, about: "this node's lease is in etcd, alive, and is FLANNEL_SUBNET"},
		{name: "net-conf", store: kubeStore, run: checkNetConf, about: "--net-config-path exists and parses"},
		{name: "kube-api", store: kubeStore, run: checkKubeAPI, about: "the Kubernetes API answers and grants subnetd's rights"},
		{name: "kube-node", store: kubeStore, run: checkKubeNode, about: "this Node exists, its pod CIDRs fit net-conf.json and are FLANNEL_SUBNET"},
		{name: "node-annotations", store: kubeStore, inNS: true, run: checkKubeAnnotations, about: "this Node's annotations are published and match flannel.<VNI> and the public address"},
		{name: "vxlan-device", inNS: true, run: checkVXLANDevice, about: "flannel.<VNI> exists and is up when the backend is vxlan"},
		{name: "overlay-peers", inNS: true, run: checkOverlayPeers, about: "routes, neighbours and FDB entries match the other nodes' leases"},
	}
}

func doctorCommand() *command {
	return &command{name: "doctor", run: doctor,
		usage: "[--json] [--cni-conf-dir D] [--cni-bin-dir D] [--subnet-file F] [--data-dir D] [--healthz URL] [--netns PATH] [--sysctl-dir D] [--etcd-endpoints URLS] [--etcd-prefix P] [--etcd-cafile F --etcd-certfile F --etcd-keyfile F] [--etcd-timeout D] [--node-id-file F] " +
			"| --kube-subnet-mgr [--kubeconfig-file F] [--kube-api-url URL] [--kube-annotation-prefix P] [--net-config-path F] [--node-name N]",
		summary: "find what breaks pods on this node and say how to fix it; exit 0 ok, 1 warnings, 2 errors"}
}

func doctor(e *env, args []string) error {
	fs := newFlagSet(e, "doctor")
	var o doctorOpts
	fs.StringVar(&o.confDir, "cni-conf-dir", "/etc/cni/net.d", "kubelet's CNI configuration directory")
	fs.StringVar(&o.binDir, "cni-bin-dir", "/opt/cni/bin", "the CNI plugin binaries")
	fs.StringVar(&o.subnetFile, "subnet-file", envfile.DefaultPath, "subnetd's lease file")
	fs.StringVar(&o.dataDir, "data-dir", disk.DefaultDataDir, "host-local's dataDir")
	fs.StringVar(&o.healthz, "healthz", "http://127.0.0.1:8471", "subnetd's health address")
	fs.StringVar(&o.netns, "netns", "", "inspect the links and rules of this network namespace instead of the current one")
	fs.StringVar(&o.sysctlDir, "sysctl-dir", "/proc/sys", "where the sysctls are (read inside --netns)")
	o.etcd.flags(fs) // etcd and the API server are reached from where cnictl runs, not from inside --netns
	o.kube.flags(fs)
	asJSON := fs.Bool("json", false, "print JSON instead of a report")
	ops, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(ops) > 0 {
		return usagef("doctor takes no operands, got %q", ops)
	}
	if err := o.etcd.check(); err != nil {
		return err
	}
	if err := o.kube.check(); err != nil {
		return err
	}
	o.kube.dial = e.kubeDial
	o.client = &http.Client{Timeout: 2 * time.Second}
	fds, err := diagnose(o)
	if err != nil {
		return err
	}
	if *asJSON {
		err = printJSON(e.stdout, fds)
	} else {
		err = printReport(e.stdout, fds)
	}
	if err != nil {
		return err
	}
	if w := worst(fds); w != OK {
		return &exitError{code: int(w)}
	}
	return nil
}

// diagnose runs every check in order; the namespaced ones inside o.netns.
func diagnose(o doctorOpts) ([]Finding, error) {
	n := &node{doctorOpts: o}
	fds := []Finding{}
	for _, c := range checks() {
		if c.store != anyStore && c.store != n.store() {
			continue
		}
		var got []Finding
		run := func() error { got = c.run(n); return nil }
		if c.inNS && o.netns != "" {
			if err := netns.Do(o.netns, run); err != nil {
				return nil, fmt.Errorf("entering --netns %s: %w", o.netns, err)
			}
		} else {
			_ = run()
		}
		for i := range got {
			got[i].Check = c.name
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func worst(fds []Finding) Severity {
	w := OK
	for _, f := range fds {
		w = max(w, f.Severity)
	}
	return w
}

func printReport(w io.Writer, fds []Finding) error {
	var b strings.Builder
	count := map[Severity]int{}
	for _, f := range fds {
		count[f.Severity]++
		fmt.Fprintf(&b, "[%s] %s: %s\n", strings.ToUpper(f.Severity.String()), f.Check, f.Message)
		for _, ev := range f.Evidence {
			fmt.Fprintf(&b, "    evidence: %s\n", ev)
		}
		if f.Fix != "" {
			fmt.Fprintf(&b, "    fix: %s\n", f.Fix)
		}
	}
	fmt.Fprintf(&b, "\n%d ok, %d warnings, %d errors\n", count[OK], count[Warn], count[Error])
	_, err := io.WriteString(w, b.String())
	return err
}

func ok(msg string, evidence ...string) []Finding {
	return []Finding{{Severity: OK, Message: msg, Evidence: evidence}}
}
