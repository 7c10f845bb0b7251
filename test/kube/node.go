package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cnisuite/cni/internal/testutil"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// NodeOptions says what a node runs its pods with.
type NodeOptions struct {
	// NS is the node's network namespace, made by the test (joined to an
	// underlay when pods must be reached from outside the node).
	NS *netnstest.NS
	// PluginDir is containerd's CNI bin_dir: the plugins under test, with
	// a loopback, which the CRI runs for every pod besides the conflist.
	PluginDir string
	// ConfDir is containerd's CNI conf_dir. Without it the node has an
	// empty one of its own (Node.ConfDir) for the test to write its
	// conflist into: containerd loads the lexically first one when it
	// appears, and reports the network ready from then on.
	ConfDir string
	// OwnCNIDirs, instead of PluginDir and ConfDir, makes containerd's
	// bin_dir and conf_dir the node's /opt/cni/bin and /etc/cni/net.d, as
	// on a real node: each an empty tmpfs private to the node (see
	// privateDir), for a CNI DaemonSet's hostPath volumes to install into,
	// so that nothing reaches the machine's own directories. Kubelet's
	// Node is then NotReady until the DaemonSet has installed a conflist.
	OwnCNIDirs bool
	// Pause is containerd's sandbox image and Images the others pods run
	// (testutil.BuildTestImages makes both): imported at the start, as
	// no registry is reachable.
	Pause  testutil.Image
	Images []testutil.Image
}

// Node is a Kubernetes node in a network namespace: containerd (and, once
// StartKubelet is called, kubelet) running in a private mount namespace
// that a process of its own holds, as on a real node where pods outlive a
// restart of either. Inside it /run, /var/lib and /var/log are private
// tmpfs (containerd's root and state, pod network namespace pins, runc's
// state, /var/lib/cni, kubelet's directories) and /sys shows the node's
// network namespace, with the machine's cgroup hierarchies mounted back
// under it. Pods' cgroups go under CgroupRoot. StartNode stops and removes
// all of it when the test ends, passed or failed.
type Node struct {
	NS         *netnstest.NS
	ConfDir    string
	CgroupRoot string // e.g. /cnisuite-cri-n-1a2b3c4d, made in every cgroup hierarchy
	// CRI is containerd's runtime service, reached through the node's
	// private /run; it reconnects by itself after RestartContainerd.
	CRI runtimeapi.RuntimeServiceClient

	dir        string
	pluginDir  string // containerd's bin_dir and conf_dir, as the node sees them
	confDir    string
	ownCNI     bool
	stopOnce   sync.Once
	conn       *grpc.ClientConn
	holder     *process // sleeps in the mount namespace, which lives as long as it does
	containerd *process
	kubelet    *process
	spawned    []*process
	pause      string   // the sandbox image's name
	cluster    *Cluster // the control plane kubelet joined, and as which Node
	name       string
}

// containerdSocket is where containerd listens inside the node's mount
// namespace, and kubelet finds it.
const containerdSocket = "/run/containerd/containerd.sock"

// StartNode makes the node's mount namespace and cgroups, starts containerd
// and imports the sandbox image. It skips the test without root, containerd
// or runc.
func StartNode(t testing.TB, opts NodeOptions) *Node {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	for _, cmd := range []string{"containerd", "ctr", "runc", "nsenter", "unshare"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("needs %s (Debian's containerd, runc, util-linux: make deps installs them)", cmd)
		}
	}
	if opts.NS == nil || opts.Pause.Archive == "" || (opts.PluginDir == "") != opts.OwnCNIDirs || opts.OwnCNIDirs && opts.ConfDir != "" {
		t.Fatal("kubetest.NodeOptions: NS, Pause and either PluginDir (ConfDir optional) or OwnCNIDirs are required")
	}
	n := &Node{NS: opts.NS, ConfDir: opts.ConfDir, pluginDir: opts.PluginDir, dir: t.TempDir(), ownCNI: opts.OwnCNIDirs,
		CgroupRoot: "/cnisuite-" + opts.NS.Name, pause: opts.Pause.Name}
	if n.ConfDir == "" && !n.ownCNI {
		n.ConfDir = filepath.Join(n.dir, "net.d")
		if err := os.Mkdir(n.ConfDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.confDir = n.ConfDir // a path of the machine's, which the node sees too (its /tmp is shared)
	n.holder = &process{name: "mount namespace holder", log: filepath.Join(n.dir, "holder.log"),
		argv: []string{"unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity"}}
	n.containerd = &process{name: "containerd", log: filepath.Join(n.dir, "containerd.log")}
	n.kubelet = &process{name: "kubelet", log: filepath.Join(n.dir, "kubelet.log")}
	t.Cleanup(func() { n.Stop(t) })
	if err := makeCgroups(n.CgroupRoot); err != nil {
		t.Fatal(err)
	}
	n.startHolder(t)
	if n.ownCNI {
		n.pluginDir, n.confDir = "/opt/cni/bin", "/etc/cni/net.d"
		n.privateDir(t, n.pluginDir)
		n.privateDir(t, n.confDir)
		n.ConfDir = n.Path(n.confDir)
	}
	n.startContainerd(t)
	for _, img := range append([]testutil.Image{opts.Pause}, opts.Images...) {
		n.ImportImage(t, img.Archive)
	}
	return n
}

// startHolder starts the process holding the mount namespace, in the
// node's network namespace, and makes the namespace's private mounts.
func (n *Node) startHolder(t testing.TB) {
	t.Helper()
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.holder.startWith([]string{"nsenter", "--net=" + n.NS.Path, "--"}, n.NS.Name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node's mount namespace", 5*time.Second, []*process{n.holder}, func() error {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.cmd.Process.Pid))
		if err == nil && ns == self {
			err = errors.New("not unshared yet")
		}
		return err
	})
	// /sys as ip netns exec mounts it (its network links are the node's),
	// with the cgroup hierarchies moved over from the old one.
	cgroups := filepath.Join(n.dir, "cgroup")
	if err := os.Mkdir(cgroups, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{
		{"mount", "--rbind", "/sys/fs/cgroup", cgroups},
		{"umount", "--lazy", "/sys"},
		{"mount", "-t", "sysfs", "sysfs", "/sys"},
		{"mount", "--move", cgroups, "/sys/fs/cgroup"},
		{"mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"},
		{"mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/var/lib"},
		{"mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/var/log"},
	} {
		n.Run(t, argv...)
	}
}

// Enter is the prefix of a command run inside the node: its network and
// mount namespaces.
func (n *Node) Enter() []string {
	return []string{"nsenter", "--target", strconv.Itoa(n.holder.cmd.Process.Pid), "--mount", "--net", "--"}
}

// Run runs a command inside the node and fails the test if it fails.
func (n *Node) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Try(args...)
	if err != nil {
		t.Fatalf("in node %s: %s: %v\n%s", n.NS.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Try runs a command inside the node and returns its output and error.
func (n *Node) Try(args ...string) (string, error) {
	argv := append(n.Enter(), args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

// Path is where the test reads or writes p as the node sees it (under its
// private /run, /var/lib, /var/log).
func (n *Node) Path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", n.holder.cmd.Process.Pid, p)
}

// Spawn runs a daemon of the test inside the node (subnetd, say), logging
// to a file whose end is printed if the test fails; it is stopped when the
// node is.
func (n *Node) Spawn(t testing.TB, name string, argv ...string) {
	t.Helper()
	p := &process{name: name, argv: argv, log: filepath.Join(n.dir, name+".log")}
	if err := p.startWith(n.Enter(), n.NS.Name); err != nil {
		t.Fatal(err)
	}
	n.spawned = append(n.spawned, p)
}

// Stop ends everything of the node now, as the end of its test otherwise
// does (a node taken out of a cluster, say), in the order a node shuts
// down: kubelet (which would start pods again), the pods through the CRI
// (so that the plugins' DEL runs), the test's daemons and containerd; then
// whatever is left in the mount namespace (shims) or the cgroups (pods'
// processes), the namespace itself with its mounts, and the cgroups.
func (n *Node) Stop(t testing.TB) {
	n.stopOnce.Do(func() { n.stop(t) })
}

func (n *Node) stop(t testing.TB) {
	n.kubelet.stop(10 * time.Second)
	if t.Failed() && n.holder.cmd != nil {
		n.podLogTails(t)
	}
	if done, _ := n.containerd.exited(); n.containerd.cmd != nil && !done {
		if err := n.removeAllPods(); err != nil {
			t.Logf("node %s: removing the pods left: %v", n.NS.Name, err)
		}
	}
	for _, p := range n.spawned {
		p.stop(10 * time.Second)
	}
	n.containerd.stop(10 * time.Second)
	if n.conn != nil {
		n.conn.Close()
	}
	if n.holder.cmd != nil {
		if err := n.killLeftovers(); err != nil {
			t.Errorf("node %s: %v", n.NS.Name, err)
		}
		n.holder.stop(time.Second)
	}
	if err := removeCgroups(n.CgroupRoot); err != nil {
		t.Errorf("node %s: %v", n.NS.Name, err)
	}
	logTailsOnFailure(t, append([]*process{n.containerd, n.kubelet}, n.spawned...)...)
}

// podLogTails prints the end of every container's log on the node (the
// DaemonSet's, say), which kubelet keeps under /var/log/pods.
func (n *Node) podLogTails(t testing.TB) {
	logs, _ := filepath.Glob(n.Path("/var/log/pods/*/*/*.log"))
	for _, l := range logs {
		t.Logf("==== node %s, last 40 lines of %s:\n%s", n.NS.Name, strings.TrimPrefix(l, n.Path("")), fileTail(l, 40))
	}
}

// removeAllPods stops and removes every pod sandbox containerd knows.
func (n *Node) removeAllPods() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	list, err := n.CRI.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range list.Items {
		if _, err := n.CRI.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, err)
		}
		if _, err := n.CRI.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killLeftovers SIGKILLs every process but the holder in the node's mount
// namespace and every process in its cgroups until none is left.
func (n *Node) killLeftovers() error {
	mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.cmd.Process.Pid))
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		pids, err := cgroupPids(n.CgroupRoot)
		if err != nil {
			return err
		}
		pids = append(pids, pidsInMountNS(mnt, n.holder.cmd.Process.Pid)...)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still alive 10 s after SIGKILL", pids)
		}
		for _, pid := range pids {
			_ = killPid(pid)
		}
	}
}
