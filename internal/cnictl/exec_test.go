package cnictl

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/internal/testutil"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestParsePortMapping(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]any // nil: a usage error
	}{
		{"8080:80/tcp", map[string]any{"hostPort": uint64(8080), "containerPort": uint64(80), "protocol": "tcp"}},
		{"53:5353/udp", map[string]any{"hostPort": uint64(53), "containerPort": uint64(5353), "protocol": "udp"}},
		{"8080:80", map[string]any{"hostPort": uint64(8080), "containerPort": uint64(80), "protocol": "tcp"}},
		{"8080", nil},
		{"0:80/tcp", nil},
		{"70000:80/tcp", nil},
		{"8080:80/icmp", nil},
		{"a:b/tcp", nil},
	}
	for _, tt := range tests {
		got, err := parsePortMapping(tt.in)
		var ue *usageError
		if tt.want == nil && !(err != nil && errors.As(err, &ue)) || tt.want != nil && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parsePortMapping(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestExecUsage(t *testing.T) {
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"add"}, "add takes NETWORK and NETNS"},
		{[]string{"del", "cbr0"}, "del takes NETWORK and NETNS"},
		{[]string{"check", "cbr0", "p", "extra"}, "check takes NETWORK and NETNS"},
		{[]string{"gc"}, "gc takes one NETWORK"},
		{[]string{"del", "cbr0", "p", "--port-mapping", "1:1/tcp"}, "flag provided but not defined: -port-mapping"},
		{[]string{"check", "cbr0", "p", "--json"}, "flag provided but not defined: -json"},
		{[]string{"reset", "now"}, "reset takes no operands"},
		{[]string{"reset", "--bogus"}, "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		code, _, stderr := run(tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("cnictl %s: exit %d, %q; want 2 and %q", strings.Join(tt.args, " "), code, stderr, tt.stderr)
		}
	}
}

func TestRuntimeConf(t *testing.T) {
	rt, err := runtimeConf(execOpts{ifName: "eth1", args: "IgnoreUnknown=1;K8S_POD_NAME=web", ports: []string{"8080:80/tcp"}}, "/run/netns/p1")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := runtimeConf(execOpts{ifName: "eth1"}, "/run/netns/p1")
	other, _ := runtimeConf(execOpts{ifName: "eth1"}, "/run/netns/p2")
	if !strings.HasPrefix(rt.ContainerID, "cnictl-") || rt.ContainerID != again.ContainerID || rt.ContainerID == other.ContainerID {
		t.Errorf("derived IDs %q %q %q: want one per namespace, stable", rt.ContainerID, again.ContainerID, other.ContainerID)
	}
	if want := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "web"}}; !reflect.DeepEqual(rt.Args, want) {
		t.Errorf("args %v, want %v", rt.Args, want)
	}
	if pm, ok := rt.CapabilityArgs["portMappings"].([]map[string]any); !ok || len(pm) != 1 {
		t.Errorf("capability args %v", rt.CapabilityArgs)
	}
	if _, err := runtimeConf(execOpts{args: "novalue"}, "/x"); err == nil {
		t.Error("--args without '=' accepted")
	}
	if rt, _ := runtimeConf(execOpts{containerID: "given"}, "/x"); rt.ContainerID != "given" {
		t.Errorf("--container-id ignored: %q", rt.ContainerID)
	}
	if nsPath("pod1") != "/run/netns/pod1" || nsPath("/proc/1/ns/net") != "/proc/1/ns/net" {
		t.Error("nsPath")
	}
}

// TestLoadNetworkNames: an unknown network's error names the networks of
// both formats there are, a conflist's and a single-plugin .conf's.
func TestLoadNetworkNames(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"10-listed.conflist": `{"cniVersion": "1.0.0", "name": "listed", "plugins": [{"type": "bridge"}]}`,
		"20-single.conf":     `{"cniVersion": "0.4.0", "name": "single", "type": "bridge"}`,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if list, err := loadNetwork(dir, "single"); err != nil || list.Name != "single" {
		t.Errorf("loadNetwork(single) = %v, %v", list, err)
	}
	_, err := loadNetwork(dir, "nosuchnet")
	if want := "(networks there: listed, single)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("loadNetwork(nosuchnet) = %v, want an error naming %s", err, want)
	}
}

func TestSplitKept(t *testing.T) {
	cached := []*libcni.NetworkAttachment{
		{ContainerID: "a", IfName: "eth0", Network: "n"},
		{ContainerID: "a", IfName: "eth1", Network: "n"},
		{ContainerID: "b", IfName: "eth0", Network: "n"},
		{ContainerID: "c", IfName: "eth0", Network: "other"},
	}
	valid, stale := splitKept("n", cached, []string{"a", "b/eth1", "z/eth0"})
	want := []types.GCAttachment{{ContainerID: "a", IfName: "eth0"}, {ContainerID: "a", IfName: "eth1"}, {ContainerID: "b", IfName: "eth1"}, {ContainerID: "z", IfName: "eth0"}}
	if !reflect.DeepEqual(valid, want) {
		t.Errorf("valid %v, want %v", valid, want)
	}
	if len(stale) != 1 || stale[0].ContainerID != "b" || stale[0].IfName != "eth0" {
		t.Errorf("stale %v, want b/eth0 only", stale)
	}
}

// execNode is a node namespace with the built plugins, a conf dir holding
// one bridge+host-local+portmap network, and temp state dirs.
type execNode struct {
	ns                                    *netnstest.NS
	bin, conf, cache, data, lock, flannel string
}

func newExecNode(t *testing.T) *execNode {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	n := &execNode{
		ns:  netnstest.New(t, "cnictl-node"),
		bin: testutil.Plugins(t, "plugins/main/bridge", "plugins/ipam/host-local", "plugins/meta/portmap", "plugins/main/loopback"),
	}
	tmp := t.TempDir()
	n.conf, n.cache, n.data, n.flannel = filepath.Join(tmp, "net.d"), filepath.Join(tmp, "cache"), filepath.Join(tmp, "networks"), filepath.Join(tmp, "flannel")
	n.lock = filepath.Join(tmp, "portmap.lock")
	n.network(t, "10-testnet.conflist", "testnet", "cni0", "iptables", "10.99.0.0/24", "fd00:99::/64")
	return n
}

// network writes a conflist: bridge with ipMasq, host-local in the temp
// dataDir, portmap with the given backend.
func (n *execNode) network(t *testing.T, file, name, bridge, backend, v4, v6 string) {
	t.Helper()
	br := map[string]any{"type": "bridge", "isGateway": true, "ipMasq": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": n.data,
			"ranges": [][]map[string]string{{{"subnet": v4}}, {{"subnet": v6}}}, "routes": []map[string]string{{"dst": "0.0.0.0/0"}}}}
	if bridge != "cni0" {
		br["bridge"] = bridge
	}
	if backend == "nftables" {
		br["ipMasqBackend"] = backend
	}
	conf := map[string]any{"cniVersion": "1.1.0", "name": name, "plugins": []any{br,
		map[string]any{"type": "portmap", "backend": backend, "capabilities": map[string]bool{"portMappings": true}}}}
	data, _ := json.Marshal(conf)
	if err := os.MkdirAll(n.conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.conf, file), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// cnictl runs a command line inside the node, with the node's dirs.
func (n *execNode) cnictl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	dirs := map[string][]string{
		"add": {"--cni-conf-dir", n.conf, "--cni-bin-dir", n.bin, "--cache-dir", n.cache},
		"reset": {"--cni-conf-dir", n.conf, "--data-dir", n.data, "--flannel-dir", n.flannel, "--cache-dir", n.cache,
			"--lock-file", n.lock, "--netns", n.ns.Path},
	}
	dirs["check"], dirs["del"], dirs["gc"] = dirs["add"], dirs["add"], dirs["add"]
	n.ns.Do(t, func() error {
		code, stdout, stderr = run(append(args, dirs[args[0]]...)...)
		return nil
	})
	return code, stdout, stderr
}

func (n *execNode) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, stderr := n.cnictl(t, args...)
	if code != 0 {
		t.Fatalf("cnictl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, stderr)
	}
	return out
}

func TestExecPrivileged(t *testing.T) {
	n := newExecNode(t)
	pod := netnstest.New(t, "cnictl-pod")
	out := n.mustRun(t, "add", "testnet", pod.Name, "--port-mapping", "8080:80/tcp")
	for _, want := range []string{"testnet: attached cnictl-", "/eth0 in " + pod.Path, "interfaces:", "cni0", "eth0", "in " + pod.Path,
		"addresses:", "10.99.0.2/24 gateway 10.99.0.1 on eth0", "fd00:99::2/64", "routes:\n  0.0.0.0/0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("add printed\n%s\nwant %q", out, want)
		}
	}
	if got := pod.Run(t, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(got, "10.99.0.2/24") {
		t.Errorf("pod has no address: %s", got)
	}
	if got, _ := n.ns.Try("iptables-save", "-t", "nat"); !strings.Contains(got, "--dport 8080") {
		t.Errorf("no port mapping rule:\n%s", got)
	}
	out = n.mustRun(t, "check", "testnet", pod.Name)
	if !strings.Contains(out, "is as ADD made it") {
		t.Errorf("check printed %q", out)
	}
	pod.Run(t, "ip", "addr", "flush", "dev", "eth0")
	if code, _, stderr := n.cnictl(t, "check", "testnet", pod.Name); code != 1 || !strings.Contains(stderr, "check testnet: plugin error") {
		t.Errorf("check of a broken attachment: exit %d, %q; want 1 and the plugin's error", code, stderr)
	}
	for range 2 {
		if out := n.mustRun(t, "del", "testnet", pod.Path); !strings.Contains(out, "deleted attachment cnictl-") {
			t.Errorf("del printed %q", out)
		}
	}
	if out, err := exec.Command("ip", "netns", "delete", pod.Name).CombinedOutput(); err != nil {
		t.Fatalf("deleting the pod's namespace: %v: %s", err, out)
	}
	n.mustRun(t, "del", "testnet", pod.Name) // the namespace is gone: still fine
	if got, _ := n.ns.Try("iptables-save", "-t", "nat"); strings.Contains(got, "8080") {
		t.Errorf("del left the port mapping:\n%s", got)
	}
	if got, _ := n.ns.Try("ip", "link", "show", "type", "veth"); strings.TrimSpace(got) != "" {
		t.Errorf("del left a veth: %s", got)
	}
}

func TestExecErrors(t *testing.T) {
	n := newExecNode(t)
	pod := netnstest.New(t, "cnictl-pod")
	tests := []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"add", "nosuchnet", pod.Name}, 1, `no network "nosuchnet" in ` + n.conf + " (networks there: testnet)"},
		{[]string{"add", "testnet"}, 2, "add takes NETWORK and NETNS"},
		{[]string{"add", "testnet", "no-such-ns-x"}, 1, "namespace /run/netns/no-such-ns-x"},
		{[]string{"add", "testnet", pod.Name, "--port-mapping", "80"}, 2, "write HOST:CONTAINER/PROTO"},
		{[]string{"add", "testnet", pod.Name, "--ifname", "this-name-is-far-too-long"}, 1, "add testnet: plugin error "},
		{[]string{"gc", "nosuchnet"}, 1, `no network "nosuchnet"`},
	}
	for _, tt := range tests {
		code, _, stderr := n.cnictl(t, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("cnictl %s: exit %d, %q; want %d and %q", strings.Join(tt.args, " "), code, stderr, tt.code, tt.stderr)
		}
	}
	if got, _ := n.ns.Try("ip", "link", "show", "type", "veth"); strings.TrimSpace(got) != "" {
		t.Errorf("a failed add left a veth: %s", got)
	}
}

func TestExecGC(t *testing.T) {
	n := newExecNode(t)
	keep, drop := netnstest.New(t, "cnictl-keep"), netnstest.New(t, "cnictl-drop")
	n.mustRun(t, "add", "testnet", keep.Name, "--container-id", "keepme")
	n.mustRun(t, "add", "testnet", drop.Name, "--container-id", "dropme")
	out := n.mustRun(t, "gc", "testnet", "--keep", "keepme")
	if !strings.Contains(out, "deleted attachment dropme/eth0") || !strings.Contains(out, "kept 1 attachments, deleted 1") {
		t.Errorf("gc printed %q", out)
	}
	if _, err := drop.Try("ip", "link", "show", "eth0"); err == nil {
		t.Error("gc left the dropped pod's eth0")
	}
	if _, err := keep.Try("ip", "link", "show", "eth0"); err != nil {
		t.Error("gc removed the kept pod's eth0")
	}
	entries, _ := os.ReadDir(filepath.Join(n.data, "testnet"))
	var held []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "10.") {
			held = append(held, e.Name())
		}
	}
	if len(held) != 1 {
		t.Errorf("reservations after gc: %v, want the kept pod's only", held)
	}
	n.mustRun(t, "check", "testnet", keep.Name, "--container-id", "keepme")
}
