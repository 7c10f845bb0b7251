package reliability

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cnisuite/cni/pkg/subnet/envfile"
	kubetest "github.com/cnisuite/cni/test/kube"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// A node moves from flanneld to subnetd by a change of binary in its unit
// file or DaemonSet: these tests run subnetd with flanneld's command lines
// unchanged, and with the same settings as FLANNELD_ variables, on
// flanneld's default paths.

// flanneldIface is the address of eth0, the overlay's interface, which
// does not carry the node's default route (ul0 does).
const flanneldIface = "192.168.77.10"

// flanneldNode is the daemon fixture's node with an eth0 besides ul0, and a
// private mount namespace in which subnetd finds /run and /var/lib empty
// (tmpfs) and /etc writable (an overlay whose changes stay in a temporary
// directory), so that it runs on the default paths: /run/flannel/subnet.env,
// /var/lib/subnetd, /etc/kube-flannel/net-conf.json.
type flanneldNode struct {
	*daemonNode
	mnt *netnstest.MountNS
}

func newFlanneldNode(t *testing.T) *flanneldNode {
	n := &flanneldNode{daemonNode: newDaemonNode(t)}
	n.ns.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	n.ns.Run(t, "ip", "addr", "add", flanneldIface+"/24", "dev", "eth0")
	n.ns.Run(t, "ip", "link", "set", "eth0", "up")
	n.ns.Run(t, "ip", "link", "set", "eth0p", "up")
	n.ns.Run(t, "ip", "route", "add", "default", "via", "192.168.76.1", "dev", "ul0")
	n.freshMounts()
	return n
}

// freshMounts gives the next subnetd a new mount namespace: an empty /run
// (but /run/netns), an empty /var/lib and a fresh /etc overlay.
func (n *flanneldNode) freshMounts() {
	t := n.t
	keep, upper, work := t.TempDir(), t.TempDir(), t.TempDir() // before the namespace: removed after it ends
	if n.mnt != nil {
		n.mnt.End()
	}
	m := netnstest.NewMountNS(t)
	m.Run(t, "mount", "--rbind", "/run/netns", keep)
	m.Run(t, "mount", "-t", "tmpfs", "-o", "mode=0755", "relrun", "/run")
	m.Run(t, "mkdir", "/run/netns")
	m.Run(t, "mount", "--rbind", keep, "/run/netns")
	m.Run(t, "mount", "-t", "tmpfs", "-o", "mode=0755", "relvarlib", "/var/lib")
	m.Run(t, "mount", "-t", "overlay", "reletc", "-o", "lowerdir=/etc,upperdir="+upper+",workdir="+work, "/etc")
	n.mnt = m
}

// writeFile writes path as the mount namespace sees it. No component of
// path may be a symbolic link: an absolute one would be followed from the
// test's own root, out of the namespace (/var/run is /run).
func (n *flanneldNode) writeFile(path, content string) {
	n.t.Helper()
	for dir := filepath.Dir(path); dir != "/"; dir = filepath.Dir(dir) {
		if fi, err := os.Lstat(n.mnt.Path(dir)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			n.t.Fatalf("%s: %s is a symbolic link; write the path it names", path, dir)
		}
	}
	p := n.mnt.Path(path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// start runs subnetd in the node and its mount namespace with args and the
// variables env ("NAME=value").
func (n *flanneldNode) start(name string, env []string, args ...string) *proc {
	n.t.Helper()
	bin, err := buildSubnetd()
	if err != nil {
		n.t.Fatal(err)
	}
	argv := append(append(append(n.mnt.Enter(), "env"), env...), bin)
	return n.spawn(name, append(argv, args...)...)
}

// subnetEnv waits for /run/flannel/subnet.env and returns it.
func (n *flanneldNode) subnetEnv(sd *proc) envfile.Env {
	n.t.Helper()
	var env envfile.Env
	n.eventually("subnet.env written", 30*time.Second, func() bool {
		var err error
		env, err = envfile.Read(n.mnt.Path(envfile.DefaultPath))
		if sd.exited() {
			n.t.Fatalf("subnetd exited:\n%s", sd.output())
		}
		return err == nil
	})
	return env
}

// asVariables is a command line of --name=value (or --name, true) flags as
// FLANNELD_ variables.
func asVariables(args []string) []string {
	var env []string
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !ok {
			value = "true"
		}
		env = append(env, "FLANNELD_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+"="+value)
	}
	return env
}

// TestSubnetdFlanneldUnit: subnetd runs with the ExecStart flags of a
// flanneld unit on etcd, then with them as FLANNELD_ variables; either way
// it writes /run/flannel/subnet.env with masquerading on and holds its
// lease in etcd at eth0's address (the default route's interface is ul0).
func TestSubnetdFlanneldUnit(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	unit := []string{"--etcd-endpoints=http://127.0.0.1:2379", "--etcd-prefix=/coreos.com/network", "--iface=eth0", "--ip-masq"}
	n := newFlanneldNode(t)
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	n.etcd("/v3/kv/put", map[string]any{"key": b64("/coreos.com/network/config"), "value": b64(netConf)})
	for i, form := range []struct {
		name      string
		args, env []string
	}{
		{"command line", unit, nil},
		{"FLANNELD variables", nil, asVariables(unit)},
	} {
		if i > 0 { // start from nothing again: no subnet.env, no lease
			n.freshMounts()
			n.etcd("/v3/kv/deleterange", map[string]any{"key": b64(subnetsPrefix), "range_end": b64(subnetsPrefix[:len(subnetsPrefix)-1] + "0")})
		}
		sd := n.start("subnetd-"+strings.ReplaceAll(form.name, " ", "-"), form.env, form.args...)
		env := n.subnetEnv(sd)
		if !env.IPMasq || env.Network.String() != "10.95.0.0/16" || !env.Network.Contains(env.Subnet.Addr()) {
			t.Errorf("%s: subnet.env %+v, want FLANNEL_IPMASQ=true and a subnet of 10.95.0.0/16", form.name, env)
		}
		var resp struct{ Kvs []etcdKV }
		key := subnetsPrefix + strings.ReplaceAll(env.Subnet.Masked().String(), "/", "-")
		if err := json.Unmarshal([]byte(n.etcd("/v3/kv/range", map[string]any{"key": b64(key)})), &resp); err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("%s: no lease %s in etcd: %v %+v", form.name, key, err, resp)
		}
		var lease struct{ PublicIP string }
		if err := json.Unmarshal(unb64(t, resp.Kvs[0].Value), &lease); err != nil || lease.PublicIP != flanneldIface {
			t.Errorf("%s: lease %s, want PublicIP %s (--iface=eth0)", form.name, unb64(t, resp.Kvs[0].Value), flanneldIface)
		}
		sd.stop()
	}
}

// TestSubnetdKubeFlannelArgs: subnetd runs in the Kubernetes API mode with
// kube-flannel.yml's arguments (--ip-masq --kube-subnet-mgr) in its pod's
// environment (in-cluster service account, net-conf.json from the
// ConfigMap's path), then with them as FLANNELD_ variables; either way it
// writes subnet.env from its Node's pod CIDR with masquerading on and
// publishes its lease on the Node at the default route's address.
func TestSubnetdKubeFlannelArgs(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	n := newFlanneldNode(t)
	c := kubetest.Start(t, kubetest.Options{NS: n.ns, Address: nodeIP})
	u, err := url.Parse(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	token := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo].Token
	pod := []string{"NODE_NAME=node1", "KUBERNETES_SERVICE_HOST=" + u.Hostname(), "KUBERNETES_SERVICE_PORT=" + u.Port()}
	for i, form := range []struct {
		name      string
		args, env []string
	}{
		{"command line", []string{"--ip-masq", "--kube-subnet-mgr"}, pod},
		{"FLANNELD variables", nil, append(asVariables([]string{"--ip-masq", "--kube-subnet-mgr"}), pod...)},
	} {
		if i > 0 { // start from nothing again: no subnet.env, no annotations
			n.freshMounts()
			c.DeleteNode(t, "node1")
		}
		c.CreateNode(t, "node1", "10.95.3.0/24")
		// Where the pod's service account is, /var/run/secrets (/var/run is /run).
		n.writeFile("/run/secrets/kubernetes.io/serviceaccount/token", token)
		n.writeFile("/run/secrets/kubernetes.io/serviceaccount/ca.crt", string(c.CA))
		n.writeFile("/etc/kube-flannel/net-conf.json", `{"Network":"10.95.0.0/16","Backend":{"Type":"vxlan"}}`)
		sd := n.start("subnetd-kube-"+strings.ReplaceAll(form.name, " ", "-"), form.env, form.args...)
		env := n.subnetEnv(sd)
		if !env.IPMasq || env.Subnet.String() != "10.95.3.1/24" {
			t.Errorf("%s: subnet.env %+v, want FLANNEL_SUBNET=10.95.3.1/24 and FLANNEL_IPMASQ=true", form.name, env)
		}
		node, err := c.Client.CoreV1().Nodes().Get(t.Context(), "node1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a := node.Annotations; a["flannel.alpha.coreos.com/public-ip"] != nodeIP || a["flannel.alpha.coreos.com/kube-subnet-manager"] != "true" {
			t.Errorf("%s: Node annotations %v, want flanneld's with public-ip %s", form.name, a, nodeIP)
		}
		sd.stop()
	}
}

// TestSubnetdNotifyAndQuietStop: with its embedded etcd, subnetd tells the
// service manager READY=1 once subnet.env is written and STOPPING=1 when
// stopped, and the embedded etcd's stop logs one line and no error or
// stack trace.
func TestSubnetdNotifyAndQuietStop(t *testing.T) {
	n := newFlanneldNode(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sd := n.start("subnetd", []string{"NOTIFY_SOCKET=" + sock}, "--iface=eth0", "--ip-masq", "--net-config="+filepath.Join(n.dir, "net-conf.json"))
	receive := func(want string, within time.Duration) {
		t.Helper()
		buf := make([]byte, 256)
		_ = conn.SetReadDeadline(time.Now().Add(within))
		k, err := conn.Read(buf)
		if err != nil || string(buf[:k]) != want {
			t.Fatalf("notification %q, %v; want %s; subnetd's output:\n%s", buf[:k], err, want, sd.output())
		}
	}
	receive("READY=1", 60*time.Second)
	if _, err := envfile.Read(n.mnt.Path(envfile.DefaultPath)); err != nil {
		t.Fatalf("READY=1 before subnet.env: %v", err)
	}
	sd.stop()
	receive("STOPPING=1", time.Second)
	out := sd.output()
	for _, bad := range []string{"stacktrace", `"level":"error"`, "level=ERROR", "server closed", "closed network connection"} {
		if strings.Contains(out, bad) {
			t.Errorf("the stop logged %q:\n%s", bad, out)
		}
	}
	if k := strings.Count(out, "the embedded etcd stopped"); k != 1 {
		t.Errorf("%d lines saying the embedded etcd stopped, want 1:\n%s", k, out)
	}
}

// TestSubnetdFlanneldRefusals: what subnetd cannot honour of flanneld's
// command line, and bad values of its variables, exit 2 naming the flag or
// variable, before anything is touched; -h lists flanneld's flags and
// exits 0, as flanneld. It runs in a namespace of its own with its files
// in temporary directories, and is killed after 10 s: a subnetd that
// accepted the command line would run on.
func TestSubnetdFlanneldRefusals(t *testing.T) {
	ns := netnstest.New(t, "cni-rel-refuse")
	bin, err := buildSubnetd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args, env []string
		code      int
		want      []string // in the output
	}{
		{args: []string{"--vmodule=main=4"}, code: 2, want: []string{"--vmodule", "-v or --log-level"}},
		{args: []string{"-log_backtrace_at=main.go:99"}, code: 2, want: []string{"--log_backtrace_at"}},
		{args: []string{"--iface-regex=eth[0"}, code: 2, want: []string{"--iface-regex"}},
		{env: []string{"FLANNELD_HEALTHZ_PORT=eighty"}, code: 2, want: []string{"FLANNELD_HEALTHZ_PORT"}},
		{env: []string{"FLANNELD_IPTABLES_RESYNC=0"}, code: 2, want: []string{"--iptables-resync"}},
		{args: []string{"-h"}, code: 0, want: []string{"-iface-can-reach", "-ip-masq-fully-random-disable", "-public-ipv6"}},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		dir := t.TempDir()
		cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, bin, "--data-dir", dir,
			"--subnet-file", filepath.Join(dir, "subnet.env")}, tc.args...)...)
		cmd.Env = append(os.Environ(), tc.env...)
		out, _ := cmd.CombinedOutput()
		cancel()
		if code := cmd.ProcessState.ExitCode(); code != tc.code {
			t.Errorf("%q %q: exit %d, want %d:\n%s", tc.env, tc.args, code, tc.code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%q %q: the output does not say %q:\n%s", tc.env, tc.args, w, out)
			}
		}
	}
}
