package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// flannelConflist is the node's conflist as kubelet reads it: flannel + portmap.
var flannelConflist = filepath.Join(confDir, "10-flannel.conflist")

// subnetEnv renders a subnet.env as subnetd writes it; v6 may be empty.
func subnetEnv(v4, v6 string, ipMasq bool) string {
	s := ""
	if v4 != "" {
		s += "FLANNEL_NETWORK=10.99.0.0/16\nFLANNEL_SUBNET=" + v4 + "\n"
	}
	if v6 != "" {
		s += "FLANNEL_IPV6_NETWORK=fd00:99::/56\nFLANNEL_IPV6_SUBNET=" + v6 + "\n"
	}
	return s + fmt.Sprintf("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=%t\n", ipMasq)
}

func mustWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// flannelValidConf completes validConf for flannel: a subnet.env (and, for
// the malformed-input table, broken variants beside it) and the saved
// configurations under dataDir; host-local's reservations in dataDir/e2e.
func flannelValidConf(t *testing.T, conf map[string]any, dataDir string) {
	t.Helper()
	env := filepath.Join(dataDir, "subnet.env")
	mustWriteFile(t, env, subnetEnv("10.99.0.1/24", "", true))
	mustWriteFile(t, env+".malformed", "FLANNEL_NETWORK=10.99.0.0/16\nFLANNEL_SUBNET=10.99.0.1\nFLANNEL_MTU=1450\n")
	mustWriteFile(t, env+".nosubnet", "FLANNEL_NETWORK=10.99.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
	conf["subnetFile"] = env
	conf["dataDir"] = filepath.Join(dataDir, "flannel")
	conf["subnetFileWait"] = "100ms"
	conf["ipam"] = map[string]any{"dataDir": dataDir}
}

// subnetFileVariant points subnetFile at one of flannelValidConf's variants.
func subnetFileVariant(suffix string) func(map[string]any) {
	return func(c map[string]any) { c["subnetFile"] = c["subnetFile"].(string) + suffix }
}

func setDelegate(key string, v any) func(map[string]any) {
	return set("delegate", map[string]any{key: v})
}

// flannelBadInputs are the flannel-only rows of the malformed-input table.
var flannelBadInputs = []badInput{
	{name: "flannel: subnet.env missing", only: "flannel", edit: subnetFileVariant(".absent"), code: 11},
	{name: "flannel: subnet.env malformed", only: "flannel", edit: subnetFileVariant(".malformed"), code: 6},
	{name: "flannel: subnet.env without a subnet", only: "flannel", edit: subnetFileVariant(".nosubnet"), code: 6},
	{name: "flannel: STATUS with subnet.env missing", only: "flannel", cmd: "STATUS", edit: subnetFileVariant(".absent"), code: 50},
	{name: "flannel: subnetFileWait not a duration", only: "flannel", edit: set("subnetFileWait", "a while"), code: 7},
	{name: "flannel: delegate type not a string", only: "flannel", edit: setDelegate("type", 1), code: 6},
	{name: "flannel: delegate with a name", only: "flannel", edit: setDelegate("name", "x"), code: 7},
	{name: "flannel: delegate with ipam", only: "flannel", edit: setDelegate("ipam", map[string]any{}), code: 7},
	{name: "flannel: delegate is flannel", only: "flannel", edit: setDelegate("type", "flannel"), code: 7},
	{name: "flannel: delegate not installed", only: "flannel", edit: setDelegate("type", "e2e-noplugin"), code: 7},
	{name: "flannel: delegate not an object", only: "flannel", edit: set("delegate", "bridge"), code: 6},
}

func init() { badInputs = append(badInputs, flannelBadInputs...) }

// renderFlannel writes a copy of conf/10-flannel.conflist into dir with
// the flannel entry's keys set (subnetFile, dataDir, ...) and an empty ipam
// base, which the libcni client points at its own dataDir.
func renderFlannel(t *testing.T, dir string, keys map[string]any) string {
	t.Helper()
	raw, err := os.ReadFile(flannelConflist)
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(raw, &conf); err != nil {
		t.Fatal(err)
	}
	for _, p := range conf["plugins"].([]any) {
		if p := p.(map[string]any); p["type"] == "flannel" {
			for k, v := range keys {
				p[k] = v
			}
			p["ipam"] = map[string]any{}
		}
	}
	path := filepath.Join(dir, filepath.Base(flannelConflist))
	mustWriteFile(t, path, string(jsonConf(t, conf)))
	return path
}

// flannelNode is a node namespace whose subnet.env the test writes, with
// the flannel conflist through libcni and every file in temporary dirs.
type flannelNode struct {
	node    *netnstest.NS
	env     string // subnet.env
	saved   string // flannel's dataDir
	c       *libcniClient
	conflst string
}

func newFlannelNode(t *testing.T, env string) *flannelNode {
	t.Helper()
	dir := t.TempDir()
	n := &flannelNode{node: netnstest.New(t, "cni-e2e-node"), env: filepath.Join(dir, "subnet.env"), saved: filepath.Join(dir, "flannel")}
	if env != "" {
		mustWriteFile(t, n.env, env)
	}
	n.conflst = renderFlannel(t, dir, map[string]any{"subnetFile": n.env, "dataDir": n.saved, "subnetFileWait": "5s"})
	n.c = newLibcniClient(t, n.node, n.conflst)
	return n
}

// savedConfigs lists flannel's saved delegate configurations.
func (n *flannelNode) savedConfigs(t *testing.T) []string { return dirNames(t, n.saved) }

// TestFlannelConflist runs conf/10-flannel.conflist through libcni and
// cnitool on a dual-stack subnet.env: two pods attached and reachable,
// CHECK, STATUS, DEL twice and GC, then no veth, reservation, cached result
// or saved configuration is left.
func TestFlannelConflist(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, kind := range clientKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			n := newFlannelNode(t, subnetEnv("10.99.3.1/24", "fd00:99:0:3::1/64", false))
			c := newClient(t, kind, n.node, n.conflst)
			list, err := libcni.NetworkConfFromFile(n.conflst)
			if err != nil {
				t.Fatal(err)
			}
			twoPods(t, c, n.node, list)
			if left := n.savedConfigs(t); len(left) != 0 {
				t.Errorf("saved configurations left: %v", left)
			}
			if nat := n.node.Run(t, "iptables-save", "-t", "nat"); strings.Contains(nat, "cnitool-") || strings.Contains(nat, "e2e-cni-e2e") {
				t.Errorf("masquerade rules left:\n%s", nat)
			}
		})
	}
}

// TestFlannelDelRetry: a DEL whose delegate fails keeps the saved
// configuration, and the retried DEL releases the address and removes it.
func TestFlannelDelRetry(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	t.Parallel()
	n := newFlannelNode(t, subnetEnv("10.99.4.1/24", "", false))
	pod := netnstest.New(t, "cni-e2e-pod")
	res := mustAdd(t, n.c, pod, "cbr0")
	// host-local cannot open its reservations while a file holds their place.
	store := filepath.Join(n.c.dataDir(), "cbr0")
	if err := os.Rename(store, store+".away"); err != nil {
		t.Fatal(err)
	}
	mustWriteFile(t, store, "")
	if err := n.c.del(t, pod); err == nil {
		t.Fatal("DEL succeeded although host-local could not release")
	}
	if saved := n.savedConfigs(t); len(saved) != 1 {
		t.Fatalf("after the failed DEL the saved configurations are %v, want the attachment's", saved)
	}
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(store+".away", store); err != nil {
		t.Fatal(err)
	}
	if err := n.c.del(t, pod); err != nil {
		t.Fatalf("retried DEL: %v", err)
	}
	detached(t, pod, res)
	nothingLeft(t, n.c, n.node, "cbr0")
	if saved := n.savedConfigs(t); len(saved) != 0 {
		t.Fatalf("saved configurations left: %v", saved)
	}
	if nat := n.node.Run(t, "iptables-save", "-t", "nat"); strings.Contains(nat, n.c.containerID(pod)) {
		t.Errorf("masquerade rules left:\n%s", nat)
	}
}

// TestFlannelWaitsForSubnetEnv: an ADD started before the daemon wrote
// subnet.env succeeds as soon as the file appears within the wait.
func TestFlannelWaitsForSubnetEnv(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	t.Parallel()
	n := newFlannelNode(t, "")
	pod := netnstest.New(t, "cni-e2e-pod")
	const delay = 500 * time.Millisecond
	time.AfterFunc(delay, func() { _ = os.WriteFile(n.env, []byte(subnetEnv("10.99.5.1/24", "", true)), 0o644) })
	start := time.Now()
	res := mustAdd(t, n.c, pod, "cbr0")
	if took := time.Since(start); took < delay || took > delay+3*time.Second {
		t.Errorf("ADD took %v; subnet.env appeared after %v", took, delay)
	}
	if got := res.IPs[0].Address.String(); !strings.HasPrefix(got, "10.99.5.") {
		t.Errorf("pod got %s, want an address of 10.99.5.0/24", got)
	}
	if err := n.c.del(t, pod); err != nil {
		t.Fatal(err)
	}
	nothingLeft(t, n.c, n.node, "cbr0")
}

// TestFlannelSubnetChanged: the node's subnet changes under a pod. The next
// ADD fails naming both subnets and what to do, and leaves nothing; once the
// old pod is gone the bridge is re-addressed and ADD works.
func TestFlannelSubnetChanged(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	t.Parallel()
	n := newFlannelNode(t, subnetEnv("10.99.6.1/24", "", true))
	old, pod := netnstest.New(t, "cni-e2e-pod"), netnstest.New(t, "cni-e2e-pod")
	mustAdd(t, n.c, old, "cbr0")
	mustWriteFile(t, n.env, subnetEnv("10.99.7.1/24", "", true))
	_, err := n.c.add(t, pod)
	if err == nil {
		t.Fatal("ADD on a new subnet succeeded while a pod of the old one is on the bridge")
	}
	for _, want := range []string{`"cni0" already has an IP address different from 10.99.7.1/24`, "10.99.6.0/24", "10.99.7.0/24", "drain", "ip link delete cni0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if r := reservations(t, n.c.dataDir(), "cbr0"); len(r) != 1 || len(n.savedConfigs(t)) != 1 {
		t.Fatalf("the failed ADD left reservations %v, saved %v", r, n.savedConfigs(t))
	}
	if err := n.c.del(t, old); err != nil {
		t.Fatal(err)
	}
	res := mustAdd(t, n.c, pod, "cbr0")
	if addrs := n.node.Run(t, "ip", "-4", "-o", "addr", "show", "dev", "cni0"); !strings.Contains(addrs, "10.99.7.1/24") || strings.Contains(addrs, "10.99.6.") {
		t.Fatalf("cni0 after re-addressing:\n%s", addrs)
	}
	pingAll(t, pod, gatewaysOf(res))
	if err := n.c.del(t, pod); err != nil {
		t.Fatal(err)
	}
	nothingLeft(t, n.c, n.node, "cbr0")
}

// TestFlannelCheckDeletedInterface: CHECK fails once the pod's interface
// is gone, and DEL still cleans up.
func TestFlannelCheckDeletedInterface(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	t.Parallel()
	n := newFlannelNode(t, subnetEnv("10.99.8.1/24", "", true))
	pod := netnstest.New(t, "cni-e2e-pod")
	mustAdd(t, n.c, pod, "cbr0")
	if err := n.c.check(t, pod); err != nil {
		t.Fatalf("CHECK of an intact attachment: %v", err)
	}
	pod.Run(t, "ip", "link", "del", "eth0")
	if err := n.c.check(t, pod); err == nil {
		t.Fatal("CHECK passed with the pod's interface deleted")
	}
	if err := n.c.del(t, pod); err != nil {
		t.Fatal(err)
	}
	nothingLeft(t, n.c, n.node, "cbr0")
}

// TestFlannelGC: a GC that keeps pod A collects pod B although the runtime
// lost B's cached result (so libcni issues no DEL for it): B's address and
// masquerade rules are released through the delegate and its saved
// configuration removed; A keeps everything.
func TestFlannelGC(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	t.Parallel()
	n := newFlannelNode(t, subnetEnv("10.99.9.1/24", "", false))
	a, b := netnstest.New(t, "cni-e2e-pod"), netnstest.New(t, "cni-e2e-pod")
	resA := mustAdd(t, n.c, a, "cbr0")
	mustAdd(t, n.c, b, "cbr0")
	for _, f := range dirNames(t, filepath.Join(n.c.cacheDir(), "results")) {
		if strings.Contains(f, n.c.containerID(b)) {
			if err := os.Remove(filepath.Join(n.c.cacheDir(), "results", f)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := n.c.gc(t, []*netnstest.NS{a}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got, want := reservations(t, n.c.dataDir(), "cbr0"), addrsOf(resA); !sameSet(got, want) {
		t.Errorf("after GC the reservations are %v, want %v", got, want)
	}
	if got, want := n.savedConfigs(t), []string{n.c.containerID(a) + "-eth0"}; !sameSet(got, want) {
		t.Errorf("after GC the saved configurations are %v, want %v", got, want)
	}
	nat := n.node.Run(t, "iptables-save", "-t", "nat")
	if !strings.Contains(nat, n.c.containerID(a)) || strings.Contains(nat, n.c.containerID(b)) {
		t.Errorf("after GC the nat table should name %s only:\n%s", n.c.containerID(a), nat)
	}
	pingAll(t, a, gatewaysOf(resA))
	if err := n.c.del(t, a); err != nil {
		t.Fatal(err)
	}
	b.Run(t, "ip", "link", "del", "eth0") // GC does not enter pods; B's runtime would delete its netns
	nothingLeft(t, n.c, n.node, "cbr0")
}
