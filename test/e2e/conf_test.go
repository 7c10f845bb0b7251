package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// confDir holds the example conflists, relative to this package.
const confDir = "../../conf"

func confFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(confDir, "*.conflist"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no files in %s: %v", confDir, err)
	}
	return files
}

// TestConfFilesParse: every file in conf/ is a conflist that libcni loads,
// at a spec version the suite supports, naming only binaries of the suite.
func TestConfFilesParse(t *testing.T) {
	names := map[string]string{}
	for _, file := range confFiles(t) {
		list, err := libcni.NetworkConfFromFile(file)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if other, dup := names[list.Name]; dup && !alternatives(file, other) {
			t.Errorf("%s and %s both define network %q", file, other, list.Name)
		}
		names[list.Name] = file
		if !slices.Contains(specVersions, list.CNIVersion) {
			t.Errorf("%s: libcni selects version %q, not one of %v", file, list.CNIVersion, specVersions)
		}
		for _, p := range list.Plugins {
			for _, typ := range []string{p.Network.Type, p.Network.IPAM.Type} {
				if typ != "" && !slices.Contains(plugins(t), typ) {
					t.Errorf("%s: plugin %q is not built from ./plugins", file, typ)
				}
			}
		}
	}
}

// alternatives tells conflists that are a node's choice between two ways to
// the same network: the flannel conflist keeps flannel's name cbr0, which
// the static example shares; a node installs one of them.
func alternatives(a, b string) bool {
	return a == flannelConflist || b == flannelConflist
}

// TestConfFilesThroughClients runs every conflist of conf/ through libcni
// and cnitool: two pods attached, reachable, checked; DEL twice, GC. The
// flannel conflist needs the node's subnet.env: TestFlannelConflist runs it.
func TestConfFilesThroughClients(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, file := range confFiles(t) {
		if file == flannelConflist {
			continue
		}
		for _, kind := range clientKinds {
			t.Run(filepath.Base(file)+"/"+kind, func(t *testing.T) {
				t.Parallel()
				node := netnstest.New(t, "cni-e2e-node")
				c := newClient(t, kind, node, file)
				list, err := libcni.NetworkConfFromFile(file)
				if err != nil {
					t.Fatal(err)
				}
				twoPods(t, c, node, list)
			})
		}
	}
}

// twoPods is a network's life on one node as a runtime sees it: two pods
// come, talk, are checked, and leave by DEL and by GC without a trace.
func twoPods(t *testing.T, c client, node *netnstest.NS, list *libcni.NetworkConfigList) {
	network, gw := list.Name, servesGateway(t, list)
	a, b := netnstest.New(t, "cni-e2e-pod"), netnstest.New(t, "cni-e2e-pod")
	resA, resB := mustAdd(t, c, a, network), mustAdd(t, c, b, network)
	reachable(t, a, resA, resB, gw)
	reachable(t, b, resB, resA, gw)
	for _, p := range []*netnstest.NS{a, b} {
		if err := c.check(t, p); err != nil {
			t.Fatalf("CHECK %s: %v", p.Name, err)
		}
	}
	if err := c.status(t); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	for i := range 2 {
		if err := c.del(t, a); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	detached(t, a, resA)
	if err := c.check(t, b); err != nil {
		t.Fatalf("CHECK of the other pod after DEL: %v", err)
	}
	if err := c.gcAll(t); err != nil {
		t.Fatalf("GC: %v", err)
	}
	detached(t, b, resB)
	nothingLeft(t, c, node, network)
}

// mustAdd attaches pod and checks that the pod holds what the result says
// and that every address is reserved on disk for this attachment.
func mustAdd(t *testing.T, c client, pod *netnstest.NS, network string) *current.Result {
	t.Helper()
	res, err := c.add(t, pod)
	if err != nil {
		t.Fatalf("ADD %s: %v", pod.Name, err)
	}
	attached(t, pod, res)
	for _, ip := range res.IPs {
		if ip.Address.IP.IsLoopback() {
			continue
		}
		file := filepath.Join(c.dataDir(), network, ip.Address.IP.String())
		got, err := os.ReadFile(file)
		if want := c.containerID(pod) + "\r\neth0"; err != nil || string(got) != want {
			t.Errorf("reservation %s = %q (%v), want %q", file, got, err, want)
		}
	}
	return res
}

// sandboxIfaces lists the result's interfaces that are inside the pod.
func sandboxIfaces(res *current.Result) []*current.Interface {
	var out []*current.Interface
	for _, iface := range res.Interfaces {
		if iface.Sandbox != "" {
			out = append(out, iface)
		}
	}
	return out
}

// attached: each interface of the result in the pod is up with its addresses.
func attached(t *testing.T, pod *netnstest.NS, res *current.Result) {
	t.Helper()
	if len(sandboxIfaces(res)) == 0 {
		t.Fatalf("result has no interface in the pod: %v", res)
	}
	for _, iface := range sandboxIfaces(res) {
		if !isUp(pod, iface.Name) {
			t.Errorf("%s in %s is not up", iface.Name, pod.Name)
		}
	}
	for _, ip := range res.IPs {
		if ip.Interface == nil || *ip.Interface >= len(res.Interfaces) {
			t.Errorf("IP %s names no interface", ip.Address.String())
			continue
		}
		name := res.Interfaces[*ip.Interface].Name
		if out := pod.Run(t, "ip", "-o", "addr", "show", "dev", name); !strings.Contains(out, " "+ip.Address.String()+" ") {
			t.Errorf("%s in %s lacks %s:\n%s", name, pod.Name, ip.Address.String(), out)
		}
	}
}

// detached: the result's interfaces are gone from the pod, or down (lo stays).
func detached(t *testing.T, pod *netnstest.NS, res *current.Result) {
	t.Helper()
	for _, iface := range sandboxIfaces(res) {
		if isUp(pod, iface.Name) {
			t.Errorf("%s in %s is still up after DEL/GC", iface.Name, pod.Name)
		}
	}
}

func isUp(pod *netnstest.NS, name string) bool {
	out, err := pod.Try("ip", "-o", "link", "show", "dev", name)
	return err == nil && (strings.Contains(out, "<UP") || strings.Contains(out, ",UP"))
}

// servesGateway tells whether the node answers at the pods' gateway address:
// the bridge holds it only with isGateway or isDefaultGateway (the spec's
// dbnet example names a gateway but sets neither).
func servesGateway(t *testing.T, list *libcni.NetworkConfigList) bool {
	t.Helper()
	for _, p := range list.Plugins {
		var keys struct{ IsGateway, IsDefaultGateway bool }
		if err := json.Unmarshal(p.Bytes, &keys); err != nil {
			t.Fatal(err)
		}
		if keys.IsGateway || keys.IsDefaultGateway {
			return true
		}
	}
	return false
}

// reachable pings, from pod, the other pod's addresses and, when the node
// serves them, pod's own gateways.
func reachable(t *testing.T, pod *netnstest.NS, own, other *current.Result, gateways bool) {
	t.Helper()
	pingAll(t, pod, addrsOf(other))
	if gateways {
		pingAll(t, pod, gatewaysOf(own))
	}
}

func addrsOf(res *current.Result) []string {
	var out []string
	for _, ip := range res.IPs {
		if !ip.Address.IP.IsLoopback() {
			out = append(out, ip.Address.IP.String())
		}
	}
	return out
}

func gatewaysOf(res *current.Result) []string {
	var out []string
	for _, ip := range res.IPs {
		if ip.Gateway != nil {
			out = append(out, ip.Gateway.String())
		}
	}
	return out
}

func pingAll(t *testing.T, pod *netnstest.NS, targets []string) {
	t.Helper()
	for _, addr := range targets {
		// -w: IPv6 addresses may still be tentative (DAD) for a moment.
		if out, err := pod.Try("ping", "-c1", "-w5", addr); err != nil {
			t.Errorf("ping %s from %s: %v\n%s", addr, pod.Name, err, out)
		}
	}
}

// nothingLeft: no veth on the node, no reservation, no cached result.
func nothingLeft(t *testing.T, c client, node *netnstest.NS, network string) {
	t.Helper()
	// A deleted pod namespace takes its veth pair with it, but the kernel
	// tears namespaces down asynchronously: give it a moment.
	var veths []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		veths = node.Links(t, "type", "veth")
		if len(veths) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(veths) > 0 {
		t.Errorf("veth left on the node: %v", veths)
	}
	if r := reservations(t, c.dataDir(), network); len(r) != 0 {
		t.Errorf("reservations left: %v", r)
	}
	if r := dirNames(t, filepath.Join(c.cacheDir(), "results")); len(r) != 0 {
		t.Errorf("cached results left: %v", r)
	}
}
