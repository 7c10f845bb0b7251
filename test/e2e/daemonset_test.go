package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
	kubetest "github.com/cnisuite/cni/test/kube"
)

// The manifests of conf/ run for real: the image `make image` builds,
// imported into the containerd of kubelet nodes (test/kube) whose
// /opt/cni/bin and /etc/cni/net.d are their own, empty, and the manifest
// applied with kubectl; the DaemonSet's pods install the plugins and the
// conflist and run subnetd, and the network they make carries pods.
const (
	dsNamespace = "kube-flannel"
	metricsPort = "8471" // the manifests' --healthz-port, their metrics port
	echoPort    = 8080   // the echo image's, and its pods' hostPort
)

// machineDirs are the machine's paths that the DaemonSet's hostPath volumes
// name (the node's private mounts stand for them): a test that wrote to
// them would change this machine's own network.
var machineDirs = []string{"/opt/cni", "/etc/cni", "/run/flannel", "/var/lib/subnetd"}

// dsImage is the DaemonSet's image and the directory of the plugins it
// packs, as make build built them (TestMain).
type dsImage struct {
	testutil.Image
	plugins string
}

// buildDSImage runs `make image` once, into a directory of the test's,
// from the binaries TestMain's make build made: -o build keeps make from
// linking them all again.
var buildDSImage = sync.OnceValues(func() (dsImage, error) {
	dir := filepath.Join(filepath.Dir(binDir), "image")
	// --no-print-directory: under make test, a sub-make would print
	// "Entering directory" lines around the image's name.
	cmd := exec.Command("make", "--no-print-directory", "-o", "build", "image", "BIN="+binDir, "RELEASE_DIR="+dir)
	cmd.Dir = repo
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return dsImage{}, fmt.Errorf("make image: %w\n%s%s", err, out, stderr.Bytes())
	}
	// mkimage prints the image's name, then the archive's path, last.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[len(lines)-2], "localhost/cnisuite/subnetd:") {
		return dsImage{}, fmt.Errorf("make image printed no image name and archive last:\n%s", out)
	}
	img := dsImage{Image: testutil.Image{Name: lines[len(lines)-2], Archive: lines[len(lines)-1]}, plugins: binDir}
	_, err = os.Stat(img.Archive)
	return img, err
})

// dsTest is the control plane and underlay the manifests' subtests share;
// each subtest brings nodes of its own.
type dsTest struct {
	o     *overlayTest
	c     *kubetest.Cluster
	image dsImage
}

// TestDaemonSet applies conf/kube-flannel.yml, then conf/subnetd-daemonset.yaml
// on other nodes of the same cluster (kube-controller-manager giving Nodes
// pod CIDRs from net-conf.json's networks), each with the image make image
// builds, and checks what the DaemonSet does on every node; the machine's
// own CNI directories are untouched.
func TestDaemonSet(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	start := time.Now()
	img, err := buildDSImage()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("make image: %s in %v", img.Name, time.Since(start).Round(time.Millisecond))
	machineUnchanged(t)
	netConf, err := os.ReadFile(filepath.Join(confDir, "net-conf.json"))
	if err != nil {
		t.Fatal(err)
	}
	o := newUnderlay(t, string(netConf))
	d := &dsTest{o: o, image: img, c: kubetest.Start(t, kubetest.Options{NS: o.ul, Address: sdUnderlay,
		ClusterCIDRs: []string{"10.244.0.0/16", "fd00:10:244::/56"}, Kubelets: true, ExposeEtcd: true})}
	t.Run("kube-flannel.yml", d.kubeMode)
	t.Run("subnetd-daemonset.yaml", d.etcdMode)
}

// machineUnchanged checks, when the test ends, that machineDirs are as
// they were.
func machineUnchanged(t *testing.T) {
	before := machineState(t)
	t.Cleanup(func() {
		if after := machineState(t); after != before {
			t.Errorf("the machine's own directories changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// machineState lists machineDirs' files with their sizes and times.
func machineState(t *testing.T) string {
	var b strings.Builder
	for _, dir := range machineDirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err == nil {
				fmt.Fprintf(&b, "%s %v %d %v\n", path, info.Mode(), info.Size(), info.ModTime())
			}
			return err
		})
		if os.IsNotExist(err) {
			fmt.Fprintf(&b, "%s absent\n", dir)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// sub is the shared underlay as the subtest t sees it, without nodes yet.
func (d *dsTest) sub(t *testing.T) *kubeOverlay {
	o := *d.o
	o.t, o.nodes = t, nil
	return &kubeOverlay{overlayTest: &o, cluster: d.c}
}

// addNodes starts nodes first..last: a default route through the
// underlay, as a node has (subnetd finds the overlay's interface by it when
// not given --iface, as the manifests do not), containerd with the image
// imported, its CNI directories private and empty, and kubelet (its Node
// registered, NotReady: no network yet).
func (d *dsTest) addNodes(k *kubeOverlay, first, last int) []*kubeletNode {
	t := k.t
	imgs := testImages(t)
	var nodes []*kubeletNode
	for i := first; i <= last; i++ {
		sd := k.addNode(i)
		sd.ns.Run(t, "ip", "route", "add", "default", "via", sdUnderlay)
		sd.ns.Run(t, "ip", "-6", "route", "add", "default", "via", sdUnderlayV6)
		kn := &kubeletNode{sdNode: sd, node: kubetest.StartNode(t, kubetest.NodeOptions{NS: sd.ns, OwnCNIDirs: true,
			Pause: imgs[0], Images: []testutil.Image{imgs[1], d.image.Image}})}
		cniDirsPrivate(t, kn)
		kn.node.StartKubelet(t, d.c, sd.name, sd.ip)
		nodes = append(nodes, kn)
	}
	return nodes
}

// cniDirsPrivate: the node sees tmpfs of its own at the DaemonSet's
// hostPaths (/run and /var/lib hold the others), and containerd's CRI runs
// the plugins and reads the conflists from there.
func cniDirsPrivate(t *testing.T, kn *kubeletNode) {
	t.Helper()
	for _, dir := range []string{"/opt/cni/bin", "/etc/cni/net.d", "/run", "/var/lib"} {
		if fstype := kn.node.MountType(t, dir); fstype != "tmpfs" {
			t.Fatalf("%s: %s is %q in the node, want a private tmpfs", kn.name, dir, fstype)
		}
	}
	s, err := kn.node.CRI.Status(t.Context(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		CNI struct{ BinDir, ConfDir string } `json:"cni"`
	}
	if err := json.Unmarshal([]byte(s.Info["config"]), &cfg); err != nil || cfg.CNI.BinDir != "/opt/cni/bin" || cfg.CNI.ConfDir != "/etc/cni/net.d" {
		t.Fatalf("%s: containerd's CNI directories %+v (%v), want /opt/cni/bin and /etc/cni/net.d", kn.name, cfg.CNI, err)
	}
}

// apply applies a manifest of conf/ with kubectl, the image its release
// copy names (as scripts/release.sh writes it) and the ConfigMap keys given
// set.
func (d *dsTest) apply(t *testing.T, file string, keys map[string]string) {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(confDir, file))
	if err != nil {
		t.Fatal(err)
	}
	image := regexp.MustCompile(`(?m)^(\s+image:) IMAGE$`)
	if !image.Match(text) {
		t.Fatalf("%s names no image IMAGE", file)
	}
	text = image.ReplaceAll(text, []byte("${1} "+d.image.Name))
	for key, v := range keys {
		re := regexp.MustCompile(`(?m)^(\s+` + regexp.QuoteMeta(key) + `:) .*$`)
		if !re.Match(text) {
			t.Fatalf("%s has no key %s", file, key)
		}
		text = re.ReplaceAll(text, []byte(fmt.Sprintf("${1} %q", v)))
	}
	t.Logf("kubectl apply -f %s:\n%s", file, d.c.Kubectl(t, string(text), "apply", "-f", "-"))
}

// daemonSetReady waits until the DaemonSet runs one pod on each node,
// Running and Ready (kubelet's probes on the metrics port answered), and
// every node is Ready (the conflist installed); it returns the pods by
// node name.
func (d *dsTest) daemonSetReady(t *testing.T, name string, nodes []*kubeletNode) map[string]*corev1.Pod {
	t.Helper()
	pods := map[string]*corev1.Pod{}
	eventually(t, "DaemonSet "+name+" ready on every node", 120*time.Second, func() error {
		ds, err := d.c.Client.AppsV1().DaemonSets(dsNamespace).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s := ds.Status; s.DesiredNumberScheduled != int32(len(nodes)) || s.NumberReady != s.DesiredNumberScheduled {
			return fmt.Errorf("status %+v", s)
		}
		list, err := d.c.Client.CoreV1().Pods(dsNamespace).List(t.Context(), metav1.ListOptions{
			LabelSelector: metav1.FormatLabelSelector(ds.Spec.Selector)})
		if err != nil {
			return err
		}
		for _, kn := range nodes {
			i := slices.IndexFunc(list.Items, func(p corev1.Pod) bool { return p.Spec.NodeName == kn.name && p.DeletionTimestamp == nil })
			if i < 0 || !podReady(&list.Items[i]) {
				return fmt.Errorf("no ready pod on %s", kn.name)
			}
			pods[kn.name] = &list.Items[i]
		}
		return nil
	})
	for _, p := range pods {
		t.Logf("pod %s on %s: Ready %v after its subnetd started", p.Name, p.Spec.NodeName, readySince(p))
	}
	for _, kn := range nodes {
		eventually(t, "Node "+kn.name+" Ready", 60*time.Second, func() error {
			node, err := d.c.Client.CoreV1().Nodes().Get(t.Context(), kn.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(node.Status.Conditions, func(c corev1.NodeCondition) bool {
				return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
			}) {
				return fmt.Errorf("conditions %+v", node.Status.Conditions)
			}
			return nil
		})
	}
	return pods
}

// readySince is how long after its last container started the pod became
// Ready: kubelet's first readiness probe runs at the start, the next a
// period later.
func readySince(p *corev1.Pod) time.Duration {
	var started, ready time.Time
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running != nil && c.State.Running.StartedAt.After(started) {
			started = c.State.Running.StartedAt.Time
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			ready = c.LastTransitionTime.Time
		}
	}
	return ready.Sub(started)
}

func podReady(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
	})
}

// eventually polls check every 200 ms until it succeeds or within passes.
func eventually(t *testing.T, what string, within time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// installed: the init container put every plugin of the image into the
// node's /opt/cni/bin, byte for byte, and the ConfigMap's conflist (which
// is conf/10-flannel.conflist) into /etc/cni/net.d/10-flannel.conflist.
func (d *dsTest) installed(t *testing.T, kn *kubeletNode) {
	t.Helper()
	entries, err := os.ReadDir(d.image.plugins)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue // daemon/
		}
		want, err := os.ReadFile(filepath.Join(d.image.plugins, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(kn.node.Path("/opt/cni/bin/" + e.Name()))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: /opt/cni/bin/%s is not the image's plugin (%v)", kn.name, e.Name(), err)
		}
	}
	want, err := os.ReadFile(flannelConflist)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(kn.node.Path("/etc/cni/net.d/10-flannel.conflist"))
	if err != nil || !sameJSON(t, string(got), string(want)) {
		t.Errorf("%s: /etc/cni/net.d/10-flannel.conflist is %q (%v), want %s", kn.name, got, err, flannelConflist)
	}
}

// nodeEnv reads the subnet.env that subnetd wrote on the node.
func nodeEnv(t *testing.T, kn *kubeletNode) envfile.Env {
	t.Helper()
	e, err := envfile.Read(kn.node.Path("/run/flannel/subnet.env"))
	if err != nil {
		t.Fatalf("%s: %v", kn.name, err)
	}
	return e
}

// hostRules: subnetd installed its masquerade and forward chains in both
// families with the image's iptables, which the node's iptables sees.
func hostRules(t *testing.T, kn *kubeletNode) {
	t.Helper()
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		rules := kn.node.Run(t, save)
		for chain, jump := range map[string]string{"POSTROUTING": "FLANNEL-POSTRTG", "FORWARD": "FLANNEL-FWD"} {
			if !hasLine(rules, "-A "+chain+" ", "-j "+jump) {
				t.Errorf("%s: %s has no jump from %s to %s:\n%s", kn.name, save, chain, jump, rules)
			}
		}
	}
}

// noErrors: subnetd, which the DaemonSet runs unprivileged (NET_ADMIN and
// NET_RAW only), logged no error on any of the nodes. The logs are read
// where kubelet keeps them: `kubectl logs` fails for a while after a
// restart of kubelet, which knows no pod until it has listed them again.
func noErrors(t *testing.T, nodes []*kubeletNode) {
	t.Helper()
	for _, kn := range nodes {
		logs, err := filepath.Glob(kn.node.Path("/var/log/pods/" + dsNamespace + "_*/subnetd/*.log"))
		if err != nil || len(logs) == 0 {
			t.Fatalf("%s: no log of subnetd's container (%v)", kn.name, err)
		}
		for _, file := range logs {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for line := range strings.Lines(string(b)) {
				if strings.Contains(line, "level=ERROR") {
					t.Errorf("%s: subnetd logged an error: %s", kn.name, line)
				}
			}
		}
	}
}

// promLine is a line of Prometheus' text format: a comment, or a sample
// (name, labels, value, optional timestamp).
var promLine = regexp.MustCompile(`^(#.*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+]?([0-9.eE+-]+|Inf|NaN)( -?[0-9]+)?)$`)

// scrape fetches subnetd's /metrics at the node's address from the
// underlay, as Prometheus would by the pod's annotations: text format, a
// valid lease.
func scrape(t *testing.T, k *kubeOverlay, kn *kubeletNode) {
	t.Helper()
	code, body := k.ul.HTTP(net.JoinHostPort(kn.ip, metricsPort), "GET", "/metrics", nil)
	if code != 200 || !strings.Contains(body, "\nsubnetd_lease_valid 1\n") {
		t.Fatalf("%s: GET /metrics from the underlay: %d, no subnetd_lease_valid 1:\n%s", kn.name, code, body)
	}
	for line := range strings.Lines(body) {
		if !promLine.MatchString(strings.TrimSuffix(line, "\n")) {
			t.Errorf("%s: /metrics line %q is not Prometheus' text format", kn.name, line)
		}
	}
}

// runEchoPods makes an echo pod on each node, its port also the node's
// hostPort, and waits until they run.
func (d *dsTest) runEchoPods(t *testing.T, nodes []*kubeletNode) []*kubePod {
	t.Helper()
	port := corev1.ContainerPort{ContainerPort: echoPort, HostPort: echoPort}
	for _, kn := range nodes {
		echoPod(t, d.c, "echo-"+kn.name, kn.name, port)
	}
	var pods []*kubePod
	for _, kn := range nodes {
		p := &kubePod{api: runningPod(t, d.c, "echo-"+kn.name), on: kn}
		p.box = kn.node.PodOf(t, "default", p.api.Name)
		pods = append(pods, p)
	}
	return pods
}

// traffic: every pod reaches every other's echo server over each family,
// and the underlay reaches each through its node's hostPort.
func (d *dsTest) traffic(t *testing.T, pods []*kubePod) {
	t.Helper()
	for _, from := range pods {
		for _, to := range pods {
			for _, ip := range to.api.Status.PodIPs {
				if from != to {
					tcpEcho(t, from.box.NetNS(), net.JoinHostPort(ip.IP, fmt.Sprint(echoPort)))
				}
			}
		}
		tcpEcho(t, d.o.ul.Path, net.JoinHostPort(from.on.ip, fmt.Sprint(echoPort)))
	}
}

// shapedPod: a pod with kubelet's bandwidth annotations is shaped by the
// conflist's bandwidth plugin on its node (a tbf at the annotated rate on its
// veth, an ifb for its egress), and deleting the pod removes the ifb.
func (d *dsTest) shapedPod(t *testing.T, kn *kubeletNode) {
	name := "shaped-" + kn.name
	annotatedEchoPod(t, d.c, name, kn.name, map[string]string{
		"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "10M"})
	runningPod(t, d.c, name)
	ifbs := func() string { return kn.node.Run(t, "ip", "-o", "link", "show", "type", "ifb") }
	eventually(t, "the pod shaped both ways", 10*time.Second, func() error {
		if q := kn.node.Run(t, "tc", "qdisc", "show"); strings.Count(q, "rate 10Mbit") != 2 || ifbs() == "" {
			return fmt.Errorf("qdiscs %q, ifbs %q", q, ifbs())
		}
		return nil
	})
	if err := d.c.Client.CoreV1().Pods("default").Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	podGone(t, d.c, name)
	eventually(t, "the pod's ifb removed", 10*time.Second, func() error {
		if l := ifbs(); l != "" {
			return fmt.Errorf("ifbs left: %s", l)
		}
		return nil
	})
}

// deletePods deletes the pods through the API and checks that, once
// kubelet has removed them, their nodes keep nothing of them.
func (d *dsTest) deletePods(t *testing.T, pods []*kubePod) {
	t.Helper()
	for _, p := range pods {
		// Where noPodState looks, the pod has its state until then.
		if r := reservations(t, p.on.node.Path("/var/lib/cni/networks"), "cbr0"); !slices.Contains(r, p.box.IP.String()) {
			t.Fatalf("host-local reserves %v on %s, not pod %s's %s", r, p.on.name, p.api.Name, p.box.IP)
		}
		if err := d.c.Client.CoreV1().Pods("default").Delete(t.Context(), p.api.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pods {
		podGone(t, d.c, p.api.Name)
		noPodState(t, p.on.node, "cbr0", []kubetest.Pod{p.box})
	}
}

// deploy starts nodes first..last, applies the manifest file with kubectl
// (the ConfigMap keys given set) and waits until its DaemonSet daemonSet
// and the Nodes are ready; it returns the nodes and the DaemonSet's pods by
// node name. The DaemonSet and the Nodes are removed when t ends.
func (d *dsTest) deploy(t *testing.T, file, daemonSet string, first, last int, keys map[string]string) (*kubeOverlay, []*kubeletNode, map[string]*corev1.Pod) {
	k := d.sub(t)
	t.Cleanup(func() { d.remove(t, daemonSet, first, last) })
	start := time.Now()
	nodes := d.addNodes(k, first, last)
	t.Logf("%d nodes registered in %v", len(nodes), time.Since(start).Round(time.Millisecond))
	start = time.Now()
	d.apply(t, file, keys)
	pods := d.daemonSetReady(t, daemonSet, nodes)
	t.Logf("DaemonSet ready and Nodes Ready %v after kubectl apply", time.Since(start).Round(time.Millisecond))
	return k, nodes, pods
}

// kubeMode: conf/kube-flannel.yml on three nodes.
func (d *dsTest) kubeMode(t *testing.T) {
	k, nodes, dsPods := d.deploy(t, "kube-flannel.yml", "kube-flannel-ds", 1, 3, nil)
	for _, kn := range nodes {
		d.installed(t, kn)
		cidrs := d.c.WaitPodCIDRs(t, kn.name, 2)
		if e := nodeEnv(t, kn); e.Subnet.Masked().String() != cidrs[0] || e.IPv6Subnet.Masked().String() != cidrs[1] {
			t.Errorf("%s: subnet.env %+v, want its Node's pod CIDRs %v", kn.name, e, cidrs)
		}
		k.checkPublished(kn.sdNode)
		scrape(t, k, kn)
		hostRules(t, kn)
	}
	for _, kn := range nodes {
		d.peersProgrammed(t, kn, nodes)
	}
	pods := d.runEchoPods(t, nodes)
	d.traffic(t, pods)
	if t.Failed() {
		return
	}
	t.Run("bandwidth annotations", func(t *testing.T) { d.shapedPod(t, nodes[0]) })
	t.Run("restarts", func(t *testing.T) { d.restarts(t, nodes[:2], pods, dsPods) })
	noErrors(t, nodes) // while every node is there
	t.Run("drain", func(t *testing.T) { d.drain(t, nodes, pods, pods[2]) })
	t.Run("pods deleted", func(t *testing.T) { d.deletePods(t, pods[:2]) })
}

// peersProgrammed: kn routes every other node's pod subnets over the
// overlay, with the neighbour and FDB entries of the other's VTEPs.
func (d *dsTest) peersProgrammed(t *testing.T, kn *kubeletNode, nodes []*kubeletNode) {
	t.Helper()
	for _, p := range nodes {
		if p != kn {
			want := peerEntriesOf(t, p)
			eventually(t, kn.name+" programs "+p.name, 20*time.Second, func() error { return kn.hasEntries(want) })
		}
	}
}

// peerEntriesOf is what other nodes hold for p in both families: a route,
// a permanent neighbour and FDB entry, from its subnet.env and VTEPs.
func peerEntriesOf(t *testing.T, p *kubeletNode) []entry {
	t.Helper()
	e := nodeEnv(t, p)
	return append(familyEntries(e.Subnet.Masked(), "flannel.1", vtepMAC(t, p.sdNode, "flannel.1"), p.ip),
		familyEntries(e.IPv6Subnet.Masked(), "flannel-v6.1", vtepMAC(t, p.sdNode, "flannel-v6.1"), p.ip6)...)
}

// restarts: kubelet restarted on one node and containerd on the other,
// pods running, changes no pod (the echo pods and the DaemonSet's: same
// uid and sandbox, no container restart), and traffic flows.
func (d *dsTest) restarts(t *testing.T, nodes []*kubeletNode, pods []*kubePod, dsPods map[string]*corev1.Pod) {
	start := time.Now()
	nodes[0].node.RestartKubelet(t)
	nodes[1].node.RestartContainerd(t)
	t.Logf("kubelet and containerd restarted in %v", time.Since(start).Round(time.Millisecond))
	for _, p := range pods {
		if box := p.on.node.PodOf(t, "default", p.api.Name); box != p.box {
			t.Errorf("pod %s's sandbox after the restarts: %+v, was %+v", p.api.Name, box, p.box)
		}
	}
	before := map[string]*corev1.Pod{}
	for _, p := range pods {
		before[p.api.Name] = p.api
	}
	for _, p := range dsPods {
		before[p.Name] = p
	}
	for _, was := range before {
		eventually(t, "pod "+was.Name+" ready after the restarts", 60*time.Second, func() error {
			p, err := d.c.Client.CoreV1().Pods(was.Namespace).Get(t.Context(), was.Name, metav1.GetOptions{})
			if err != nil || !podReady(p) {
				return fmt.Errorf("not ready: %v", err)
			}
			if p.UID != was.UID || slices.ContainsFunc(p.Status.ContainerStatuses, func(c corev1.ContainerStatus) bool { return c.RestartCount > 0 }) {
				t.Fatalf("pod %s after the restarts: uid %s (was %s), containers %+v", was.Name, p.UID, was.UID, p.Status.ContainerStatuses)
			}
			return nil
		})
	}
	d.traffic(t, pods)
}

// drain: the node of pod gone drained with kubectl (its echo pod evicted,
// leaving nothing on it; the DaemonSet's pod stays), stopped and its Node
// deleted: the other nodes drop its routes, neighbours and FDB entries
// and still reach each other.
func (d *dsTest) drain(t *testing.T, nodes []*kubeletNode, pods []*kubePod, gone *kubePod) {
	kn := gone.on
	entries := peerEntriesOf(t, kn)
	start := time.Now()
	t.Logf("kubectl drain:\n%s", d.c.Kubectl(t, "", "drain", kn.name, "--ignore-daemonsets", "--force", "--timeout=90s"))
	t.Logf("drained in %v", time.Since(start).Round(time.Millisecond))
	podGone(t, d.c, gone.api.Name)
	noPodState(t, kn.node, "cbr0", []kubetest.Pod{gone.box})
	kn.node.Stop(t)
	d.c.Kubectl(t, "", "delete", "node", kn.name)
	start = time.Now()
	for _, n := range nodes {
		if n != kn {
			eventually(t, n.name+" drops "+kn.name, 20*time.Second, func() error { return n.lacksEntries(entries) })
		}
	}
	t.Logf("the other nodes dropped %s %v after its Node's deletion", kn.name, time.Since(start).Round(time.Millisecond))
	d.traffic(t, slices.DeleteFunc(slices.Clone(pods), func(p *kubePod) bool { return p == gone }))
}

// lacksEntries reports the first of the entries that n still holds.
func (n *sdNode) lacksEntries(entries []entry) error {
	for _, e := range entries {
		out, err := n.ns.Try(e.cmd...)
		if err != nil {
			return fmt.Errorf("%s: %s: %v", n.name, strings.Join(e.cmd, " "), err)
		}
		if slices.ContainsFunc(strings.Split(out, "\n"), func(line string) bool {
			return !slices.ContainsFunc(e.words, func(w string) bool { return !strings.Contains(line, w) })
		}) {
			return fmt.Errorf("%s still has %q in `%s`", n.name, e.words, strings.Join(e.cmd, " "))
		}
	}
	return nil
}

// remove deletes the DaemonSet and the Nodes of nodes first..last once
// the nodes are stopped (a subtest's first cleanup runs last), so that the
// next subtest's nodes start from a clean cluster (without a garbage
// collector, the DaemonSet's pods stay, bound to Nodes that are gone).
func (d *dsTest) remove(t *testing.T, daemonSet string, first, last int) {
	d.c.Kubectl(t, "", "--namespace", dsNamespace, "delete", "daemonset", daemonSet, "--ignore-not-found", "--wait=false")
	for i := first; i <= last; i++ {
		d.c.Kubectl(t, "", "delete", "node", fmt.Sprintf("node%d", i), "--ignore-not-found")
	}
}

// etcdMode: conf/subnetd-daemonset.yaml on two new nodes, subnetd leasing
// their subnets in the cluster's etcd (under flannel's prefix, beside the
// API server's /registry).
func (d *dsTest) etcdMode(t *testing.T) {
	k, nodes, _ := d.deploy(t, "subnetd-daemonset.yaml", "subnetd", 4, 5, map[string]string{"etcd-endpoints": d.c.EtcdURL})
	keys := d.etcdKeys(t)
	for _, kn := range nodes {
		d.installed(t, kn)
		scrape(t, k, kn)
		hostRules(t, kn)
		e := nodeEnv(t, kn)
		lease := "/coreos.com/network/subnets/" + subnet.Subnets{V4: e.Subnet.Masked(), V6: e.IPv6Subnet.Masked()}.Key()
		if !slices.Contains(keys, lease) {
			t.Errorf("%s: no lease %s in etcd for subnet.env %+v: %v", kn.name, lease, e, keys)
		}
	}
	for _, key := range keys {
		if !strings.HasPrefix(key, "/registry/") && !strings.HasPrefix(key, "/coreos.com/network/") {
			t.Errorf("etcd key %s is neither the API server's nor subnetd's", key)
		}
	}
	for _, kn := range nodes {
		d.peersProgrammed(t, kn, nodes)
	}
	d.traffic(t, d.runEchoPods(t, nodes))
	noErrors(t, nodes)
}

// etcdKeys lists every key of the cluster's etcd, through its JSON gateway
// from the underlay.
func (d *dsTest) etcdKeys(t *testing.T) []string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"key": b64("\x00"), "range_end": b64("\x00"), "keys_only": true})
	code, out := d.o.ul.HTTP(strings.TrimPrefix(d.c.EtcdURL, "http://"), "POST", "/v3/kv/range", body)
	var resp struct{ Kvs []struct{ Key string } }
	if err := json.Unmarshal([]byte(out), &resp); code != 200 || err != nil {
		t.Fatalf("etcd range: %d %v %s", code, err, out)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		k, _ := base64.StdEncoding.DecodeString(kv.Key)
		keys = append(keys, string(k))
	}
	return keys
}
