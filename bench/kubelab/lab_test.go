package kubelab

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/cnisuite/cni/bench/labkit"
	"github.com/cnisuite/cni/internal/proc"
	kubetest "github.com/cnisuite/cni/test/kube"
	netnstest "github.com/cnisuite/cni/test/netns"
)

const (
	ulAddr    = "192.168.79.1" // the underlay's bridge, where the API server listens
	netConfig = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`
	ann       = "flannel.alpha.coreos.com/"
	// eventPause separates the new Nodes, so that each is measured alone.
	eventPause = 20 * time.Millisecond
	stopGrace  = 10 * time.Second
	// eventLabel marks the new Nodes of the event phase, deleted after each daemon.
	eventLabel = "cnibench-events"
)

// TestKubeLab runs the Request named by $CNIBENCH_KUBELAB and writes its
// Result; Run starts it (go run ./bench -kube-only).
func TestKubeLab(t *testing.T) {
	var req Request
	if ok, err := labkit.ReadRequest(EnvRequest, &req); !ok {
		t.Skip("run by the bench (`go run ./bench -kube-only`), which sets " + EnvRequest)
	} else if err != nil {
		t.Fatal(err)
	}
	// The bench's SIGTERM (its own interrupt) ends the phase under way, and
	// the cleanups then stop every process and delete every namespace.
	ctx, stop := signal.NotifyContext(t.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l := newLab(ctx, t, req.Dir)
	figs := make([]Figures, len(req.Daemons))
	for k, d := range req.Daemons {
		figs[k] = Figures{Name: d.Name}
		l.events(d, req.Events, &figs[k])
	}
	for _, n := range req.Nodes {
		l.addPeers(n)
		for k, d := range req.Daemons {
			s, hwm := l.start(d, n)
			figs[k].Start, figs[k].HWMKiB = append(figs[k].Start, s), hwm
		}
	}
	if err := labkit.WriteJSON(req.Out, Result{Daemons: figs}); err != nil {
		t.Fatal(err)
	}
}

// lab is the control plane in the underlay, and the node namespaces on it.
type lab struct {
	ctx     context.Context
	t       *testing.T
	dir     string
	ul      *netnstest.NS
	cluster *kubetest.Cluster
	api     kubernetes.Interface // unthrottled, to create thousands of Nodes
	netConf string
	nodes   int // node namespaces made so far
	peers   int // peer Nodes in the API: peer-00000 ... peer-<peers-1>
}

func newLab(ctx context.Context, t *testing.T, dir string) *lab {
	l := &lab{ctx: ctx, t: t, dir: dir, netConf: filepath.Join(dir, "net-conf.json")}
	if err := os.WriteFile(l.netConf, []byte(netConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	l.ul = netnstest.New(t, "cnibk-ul")
	l.ul.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	l.ul.Run(t, "ip", "addr", "add", ulAddr+"/24", "dev", "br0")
	l.ul.Run(t, "ip", "link", "set", "br0", "up")
	l.cluster = kubetest.Start(t, kubetest.Options{NS: l.ul, Address: ulAddr})
	cfg := kubetest.RESTConfigFor(t, l.cluster.Kubeconfig, l.ul)
	cfg.QPS = -1 // no client-side rate limit
	var err error
	if l.api, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return l
}

// node is a node namespace on the underlay and its Node object.
type node struct {
	ns   *netnstest.NS
	name string // its Node's
	dir  string
}

// node makes a fresh node namespace with eth0 on the underlay, and its
// Node with a pod CIDR of its own (10.0.<n>.0/24, below every peer's) and
// an annotation: kubelet registers Nodes with some, and flanneld panics on
// a Node without any ("assignment to entry in nil map").
func (l *lab) node() *node {
	t := l.t
	l.nodes++
	n := &node{ns: netnstest.New(t, "cnibk-n"), name: fmt.Sprintf("bench-node-%d", l.nodes),
		dir: filepath.Join(l.dir, fmt.Sprintf("node%d", l.nodes))}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	veth := fmt.Sprintf("ulv%d", l.nodes)
	l.ul.Run(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n.ns.Name)
	l.ul.Run(t, "ip", "link", "set", veth, "master", "br0", "up")
	n.ns.Run(t, "ip", "addr", "add", fmt.Sprintf("192.168.79.%d/24", 10+l.nodes), "dev", "eth0")
	n.ns.Run(t, "ip", "link", "set", "eth0", "up")
	cidr := fmt.Sprintf("10.0.%d.0/24", l.nodes)
	obj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"}},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}}}
	if _, err := l.api.CoreV1().Nodes().Create(l.ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating node %s: %v", n.name, err)
	}
	return n
}

// peerNode is a peer's Node as a flanneld (or subnetd) node publishes it.
func peerNode(name string, p labkit.Peer, labels map[string]string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{
			ann + "kube-subnet-manager": "true", ann + "backend-type": "vxlan",
			ann + "backend-data": p.BackendData(), ann + "public-ip": p.Public}},
		Spec: corev1.NodeSpec{PodCIDR: p.Subnet.String(), PodCIDRs: []string{p.Subnet.String()}},
	}
}

// spawn starts d on n as n's Node, with flanneld's flags (subnetd also
// logs its per-event timings at debug level). ip netns exec execs the
// daemon, so the pid is the daemon's.
func (l *lab) spawn(d Daemon, n *node) *exec.Cmd {
	t := l.t
	args := []string{"netns", "exec", n.ns.Name, d.Bin, "--kube-subnet-mgr", "--kubeconfig-file", l.cluster.Kubeconfig,
		"--net-config-path", l.netConf, "--iface", "eth0", "--subnet-file", filepath.Join(n.dir, "subnet.env")}
	if d.Name == "subnetd" {
		args = append(args, "--data-dir", n.dir, "--log-level", "debug")
	}
	log, err := os.Create(filepath.Join(n.dir, d.Name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), "NODE_NAME="+n.name)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", d.Name, err)
	}
	t.Cleanup(func() { proc.Stop(cmd, stopGrace) })
	return cmd
}

// done stops the daemon and deletes its Node, so that the next daemon sees
// the same Nodes.
func (l *lab) done(cmd *exec.Cmd, n *node) {
	proc.Stop(cmd, stopGrace)
	if err := l.api.CoreV1().Nodes().Delete(l.ctx, n.name, metav1.DeleteOptions{}); err != nil {
		l.t.Fatalf("deleting node %s: %v", n.name, err)
	}
}

// events: with d running and settled on a fresh node, create new peer
// Nodes one at a time and time each to its route, neighbour and FDB entry.
func (l *lab) events(d Daemon, count int, f *Figures) {
	t := l.t
	n := l.node()
	cmd := l.spawn(d, n)
	l.waitFile(d.Name, filepath.Join(n.dir, "subnet.env"))
	time.Sleep(500 * time.Millisecond) // the daemon's start-up writes settle
	tr, err := labkit.Track(n.ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()
	b := l.watch()
	defer b.stop()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	labels := map[string]string{eventLabel: "true"}
	for i := range count {
		p := labkit.PeerN(i)
		name := fmt.Sprintf("new-%03d", i)
		start := time.Now()
		if _, err := l.api.CoreV1().Nodes().Create(l.ctx, peerNode(name, p, labels), metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating node %s: %v", name, err)
		}
		created := time.Since(start)
		last := l.programmed(tr, []labkit.Peer{p}, 10*time.Second, d.Name)
		seen, ok := b.At(l.ctx, name, start.Add(10*time.Second))
		if !ok {
			t.Fatalf("the lab's watch did not see node %s within 10 s", name)
		}
		f.Event, f.Create = append(f.Event, ms(last.Sub(start))), append(f.Create, ms(created))
		f.Seen, f.Share = append(f.Seen, ms(seen.Sub(start))), append(f.Share, ms(last.Sub(seen)))
		f.SeenUS, f.LastUS = append(f.SeenUS, seen.UnixMicro()), append(f.LastUS, last.UnixMicro())
		time.Sleep(eventPause)
	}
	f.RSSKiB = labkit.ProcStatus(cmd.Process.Pid, "VmRSS")
	if math.IsNaN(f.RSSKiB) {
		t.Fatalf("%s exited during the new Nodes (log in %s)", d.Name, n.dir)
	}
	l.done(cmd, n)
	f.EventLog = filepath.Join(n.dir, d.Name+".log")
	err = l.api.CoreV1().Nodes().DeleteCollection(l.ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: eventLabel})
	if err != nil {
		t.Fatalf("deleting the new Nodes: %v", err)
	}
}

// programmed waits for the peers' entries in the tracked node; it fails
// the test after timeout, or when the bench is interrupted.
func (l *lab) programmed(tr *labkit.Tracker, peers []labkit.Peer, timeout time.Duration, who string) time.Time {
	type result struct {
		at time.Time
		ok bool
	}
	ch := make(chan result, 1)
	go func() {
		at, ok := tr.Programmed(peers, time.Now().Add(timeout))
		ch <- result{at, ok}
	}()
	select {
	case r := <-ch:
		if !r.ok {
			l.t.Fatalf("%s did not program %d peers within %v (logs in %s)", who, len(peers), timeout, l.dir)
		}
		return r.at
	case <-l.ctx.Done():
		l.t.Fatalf("interrupted: %v", context.Cause(l.ctx))
		return time.Time{}
	}
}

// waitFile waits for the daemon's subnet.env.
func (l *lab) waitFile(who, path string) {
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Since(start) > 60*time.Second || l.ctx.Err() != nil {
			l.t.Fatalf("%s: no %s within 60 s (logs in %s)", who, path, l.dir)
		}
	}
}

// addPeers creates peer Nodes until there are n, a few at a time: the
// API server, not one client's round trips, sets the pace.
func (l *lab) addPeers(n int) {
	const workers = 8
	start, from := time.Now(), l.peers
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				name := fmt.Sprintf("peer-%05d", i)
				_, err := l.api.CoreV1().Nodes().Create(l.ctx, peerNode(name, labkit.PeerN(i), nil), metav1.CreateOptions{})
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, fmt.Errorf("creating node %s: %w", name, err))
					mu.Unlock()
				}
			}
		})
	}
	for i := from; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		l.t.Fatal(firstErr)
	}
	l.peers = n
	l.t.Logf("%d peer Nodes created in %v; %d in all", n-from, time.Since(start).Round(time.Millisecond), n)
}

// start starts d on a fresh node with n peer Nodes in the API and times it
// to the last of their entries; it returns seconds and the daemon's VmHWM.
func (l *lab) start(d Daemon, n int) (float64, float64) {
	t := l.t
	node := l.node()
	tr, err := labkit.Track(node.ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()
	peers := make([]labkit.Peer, n)
	for i := range peers {
		peers[i] = labkit.PeerN(i)
	}
	start := time.Now()
	cmd := l.spawn(d, node)
	last := l.programmed(tr, peers, 3*time.Minute, d.Name)
	hwm := labkit.ProcStatus(cmd.Process.Pid, "VmHWM")
	if math.IsNaN(hwm) {
		t.Fatalf("%s exited after programming %d peers (log in %s)", d.Name, n, node.dir)
	}
	l.done(cmd, node)
	t.Logf("%s: %d peers programmed %v after its start, VmHWM %.0f KiB", d.Name, n, last.Sub(start).Round(time.Millisecond), hwm)
	return last.Sub(start).Seconds(), hwm
}

// bystander is the lab's own watch on Nodes: when it sees a new Node is
// when any client of the API server can first know of it.
type bystander struct {
	*labkit.Sightings
	w watch.Interface
}

func (l *lab) watch() *bystander {
	nodes := l.api.CoreV1().Nodes()
	list, err := nodes.List(l.ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		l.t.Fatal(err)
	}
	w, err := nodes.Watch(l.ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		l.t.Fatal(err)
	}
	b := &bystander{Sightings: labkit.NewSightings(), w: w}
	go func() {
		for ev := range w.ResultChan() {
			now := time.Now()
			if n, ok := ev.Object.(*corev1.Node); ok && ev.Type == watch.Added {
				b.Saw(now, n.Name)
			}
		}
	}()
	return b
}

func (b *bystander) stop() { b.w.Stop() }
