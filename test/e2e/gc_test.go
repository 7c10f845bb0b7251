package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// gcCase is one plugin of the suite in a conflist of its own, as GC sees it.
type gcCase struct {
	name    string
	plugins []map[string]any // the conflist's plugins; flannel renders its own
	ports   bool             // attach with a hostPort mapping per pod (portmap)
	rules   bool             // the chain leaves nat rules naming the container
	flannel bool
	prepare func(t *testing.T, node *netnstest.NS)
}

func gcIPAM(subnet string) map[string]any {
	return map[string]any{"type": "host-local", "ranges": []any{[]any{map[string]any{"subnet": subnet}}}}
}

var gcCases = []gcCase{{
	name:    "bridge+host-local",
	plugins: []map[string]any{{"type": "bridge", "bridge": "gcbr0", "isGateway": true, "ipMasq": true, "ipam": gcIPAM("10.77.1.0/24")}},
	rules:   true,
}, {
	name:    "macvlan+host-local",
	plugins: []map[string]any{{"type": "macvlan", "master": macvlanMaster, "ipam": gcIPAM("10.77.2.0/24")}},
	prepare: func(t *testing.T, node *netnstest.NS) {
		node.Run(t, "ip", "link", "add", macvlanMaster, "type", "bridge")
	},
}, {
	name: "bridge+portmap",
	plugins: []map[string]any{
		{"type": "bridge", "bridge": "gcbr0", "isGateway": true, "ipam": gcIPAM("10.77.3.0/24")},
		{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
	},
	ports: true, rules: true,
}, {
	name:    "loopback",
	plugins: []map[string]any{{"type": "loopback"}},
}, {
	name: "flannel+portmap", flannel: true, ports: true, rules: true,
}}

// gcConflist writes the case's conflist (CNI 1.1.0: libcni sends GC only from
// that version on) and returns its path and, for flannel, where flannel
// saves its delegate configurations.
func gcConflist(t *testing.T, c gcCase) (path, saved string) {
	t.Helper()
	dir := t.TempDir()
	if c.flannel {
		mustWriteFile(t, filepath.Join(dir, "subnet.env"), subnetEnv("10.77.4.1/24", "", true))
		saved = filepath.Join(dir, "flannel")
		return renderFlannel(t, dir, map[string]any{"subnetFile": filepath.Join(dir, "subnet.env"), "dataDir": saved}), saved
	}
	plugins := make([]any, len(c.plugins))
	for i, p := range c.plugins {
		plugins[i] = p
	}
	path = filepath.Join(dir, "gcnet.conflist")
	mustWriteFile(t, path, string(jsonConf(t, map[string]any{"cniVersion": "1.1.0", "name": "gcnet", "plugins": plugins})))
	return path, ""
}

// TestGCEveryPlugin: for every plugin of the suite and both clients, two
// pods are attached and the runtime then forgets them (its cache wiped, so
// no client-side DEL happens): the plugins' GC alone must free what the
// forgotten ones held (addresses, index entries, nat rules, flannel's saved
// configurations) and keep the valid one's. libcni keeps pod A valid;
// cnitool's GC names no valid attachment, so everything goes.
func TestGCEveryPlugin(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, gc := range gcCases {
		for _, kind := range clientKinds {
			t.Run(gc.name+"/"+kind, func(t *testing.T) {
				t.Parallel()
				node := netnstest.New(t, "cni-e2e-node")
				if gc.prepare != nil {
					gc.prepare(t, node)
				}
				file, saved := gcConflist(t, gc)
				c := newClient(t, kind, node, file)
				network := "gcnet"
				if gc.flannel {
					network = "cbr0"
				}
				gcEveryPlugin(t, gc, c, node, network, saved)
			})
		}
	}
}

func gcEveryPlugin(t *testing.T, gc gcCase, c client, node *netnstest.NS, network, saved string) {
	a, b := netnstest.New(t, "cni-e2e-pod"), netnstest.New(t, "cni-e2e-pod")
	resA, resB := addForGC(t, c, gc, node, a, 18081), addForGC(t, c, gc, node, b, 18082)
	forget := c.containerID(b)
	var keep []string
	if lc, ok := c.(*libcniClient); ok {
		keep = addrsOf(resA)
		forgetCached(t, c, forget)
		if err := lc.gc(t, []*netnstest.NS{a}); err != nil {
			t.Fatalf("GC keeping %s: %v", a.Name, err)
		}
	} else {
		forgetCached(t, c, "")
		if err := c.gcAll(t); err != nil {
			t.Fatalf("GC: %v", err)
		}
	}
	if got := reservations(t, c.dataDir(), network); !sameSet(got, keep) {
		t.Errorf("after GC the reservations are %v, want %v (B had %v)", got, keep, addrsOf(resB))
	}
	if got := indexEntries(t, c.dataDir(), network); got != min(len(keep), 1) {
		t.Errorf("after GC %d attachments are indexed, want %d", got, min(len(keep), 1))
	}
	nat := node.Run(t, "iptables-save", "-t", "nat")
	if strings.Contains(nat, forget) || (gc.rules && len(keep) > 0 && !strings.Contains(nat, c.containerID(a))) {
		t.Errorf("after GC the nat table should name only the kept %s:\n%s", c.containerID(a), nat)
	}
	if gc.flannel {
		if left := dirNames(t, saved); len(left) != min(len(keep), 1) || strings.Contains(strings.Join(left, " "), forget) {
			t.Errorf("after GC flannel's saved configurations are %v", left)
		}
	}
	if len(keep) > 0 {
		if err := c.del(t, a); err != nil {
			t.Fatalf("DEL %s: %v", a.Name, err)
		}
	}
	if r := reservations(t, c.dataDir(), network); len(r) != 0 {
		t.Errorf("reservations left: %v", r)
	}
	if nat := node.Run(t, "iptables-save", "-t", "nat"); strings.Contains(nat, c.containerID(a)) {
		t.Errorf("nat rules left:\n%s", nat)
	}
}

// addForGC attaches pod, with a hostPort mapping when the case has portmap:
// libcni passes it as a capability, cnitool through CAP_ARGS.
func addForGC(t *testing.T, c client, gc gcCase, node, pod *netnstest.NS, hostPort int) *current.Result {
	t.Helper()
	if !gc.ports {
		res, err := c.add(t, pod)
		if err != nil {
			t.Fatalf("ADD %s: %v", pod.Name, err)
		}
		return res
	}
	caps := map[string]any{"portMappings": []any{portmapMapping(hostPort)}}
	var res *current.Result
	var err error
	switch c := c.(type) {
	case *libcniClient:
		err = c.inNode(t, func(ctx context.Context) error {
			rt := c.rt(pod)
			rt.CapabilityArgs = caps
			r, err := c.cni.AddNetworkList(ctx, c.list, rt)
			if err == nil {
				res, err = current.NewResultFromResult(r)
			}
			return err
		})
	case *cnitoolClient:
		res, err = cnitoolAddWithCaps(t, c, pod, caps)
	}
	if err != nil {
		t.Fatalf("ADD %s with port %d: %v", pod.Name, hostPort, err)
	}
	if nat := node.Run(t, "iptables-save", "-t", "nat"); !strings.Contains(nat, fmt.Sprint(hostPort)) {
		t.Fatalf("no rule maps port %d:\n%s", hostPort, nat)
	}
	return res
}

// cnitoolAddWithCaps is cnitool add with CAP_ARGS, run as cnitoolClient.run
// runs it (private /var/lib, inside the node).
func cnitoolAddWithCaps(t *testing.T, c *cnitoolClient, pod *netnstest.NS, caps map[string]any) (*current.Result, error) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	capArgs, _ := json.Marshal(caps)
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", mountVarLib, c.varLib, "ip", "netns", "exec", c.node.Name, c.tool, "add", c.network, pod.Path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_PATH=" + binDir, "NETCONFPATH=" + c.confDir, "CAP_ARGS=" + string(capArgs)}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cnitool add %s: %w\n%s%s", pod.Path, err, stdout.Bytes(), stderr.Bytes())
	}
	r, err := create.CreateFromBytes(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("cnitool add printed %q: %w", stdout.Bytes(), err)
	}
	return current.NewResultFromResult(r)
}

// forgetCached removes the client's cached results naming containerID (all
// of them when it is ""), as a wiped or lost runtime cache does.
func forgetCached(t *testing.T, c client, containerID string) {
	t.Helper()
	dir := filepath.Join(c.cacheDir(), "results")
	for _, f := range dirNames(t, dir) {
		if strings.Contains(f, containerID) {
			if err := os.Remove(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// indexEntries counts the attachments host-local's index holds for a network.
func indexEntries(t *testing.T, dataDir, network string) int {
	t.Helper()
	return len(dirNames(t, filepath.Join(dataDir, network, ".cnisuite", "owners")))
}

// TestFieldFailureReclaimThenGC reproduces "no IP addresses available in
// network": a range filled by pods whose DEL never came, three of them with
// their namespace deleted, two whose namespace the runtime leaked too, and
// the runtime's cache of all five lost. The next ADDs succeed by reclaiming
// the three provably gone (the leaked namespaces prove nothing: kept); then a
// GC with the true valid list frees the other two and every nat rule of the
// five, and the range serves again.
func TestFieldFailureReclaimThenGC(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	t.Parallel()
	node := netnstest.New(t, "cni-e2e-node")
	ipam := gcIPAM("10.77.5.0/24")
	ipam["ranges"] = []any{[]any{map[string]any{"subnet": "10.77.5.0/24", "rangeEnd": "10.77.5.7"}}} // .2-.7: six addresses
	file, _ := gcConflist(t, gcCase{plugins: []map[string]any{{"type": "bridge", "bridge": "gcbr0", "isGateway": true, "ipMasq": true, "ipam": ipam}}})
	c := newLibcniClient(t, node, file)
	pods := make([]*netnstest.NS, 6) // 0 live, 1-2 leaked namespaces, 3-5 deleted namespaces
	for i := range pods {
		pods[i] = netnstest.New(t, "cni-e2e-pod")
		mustAdd(t, c, pods[i], "gcnet")
	}
	for _, p := range pods[1:] {
		forgetCached(t, c, c.containerID(p))
	}
	for _, p := range pods[3:] {
		p.Delete(t)
	}
	if err := c.status(t); err != nil {
		t.Fatalf("STATUS with reclaimable addresses: %v", err)
	}
	live := []*netnstest.NS{pods[0]}
	for range 3 {
		p := netnstest.New(t, "cni-e2e-pod")
		mustAdd(t, c, p, "gcnet")
		live = append(live, p)
	}
	late := netnstest.New(t, "cni-e2e-pod")
	if _, err := c.add(t, late); err == nil || !strings.Contains(err.Error(), "no IP addresses available in network: gcnet") {
		t.Fatalf("ADD with only live and leaked-namespace owners left: %v", err)
	}
	if err := c.gc(t, live); err != nil {
		t.Fatalf("GC: %v", err)
	}
	var want []string
	for _, p := range live {
		want = append(want, c.containerID(p))
	}
	if got := holders(t, c.dataDir(), "gcnet"); !sameSet(got, want) {
		t.Fatalf("after GC the addresses are held by %v, want %v", got, want)
	}
	nat := node.Run(t, "iptables-save", "-t", "nat")
	for _, p := range pods[1:] {
		if strings.Contains(nat, c.containerID(p)) {
			t.Errorf("nat rules of the gone %s left after GC", p.Name)
		}
	}
	mustAdd(t, c, late, "gcnet")
	for _, p := range pods[1:3] { // the runtime deletes the namespaces it leaked
		p.Delete(t)
	}
	for _, p := range append(live, late) {
		if err := c.del(t, p); err != nil {
			t.Fatalf("DEL %s: %v", p.Name, err)
		}
	}
	nothingLeft(t, c, node, "gcnet")
	if n := indexEntries(t, c.dataDir(), "gcnet"); n != 0 {
		t.Errorf("%d attachments left in the index", n)
	}
}

// holders lists the container IDs the network's records name.
func holders(t *testing.T, dataDir, network string) []string {
	t.Helper()
	var out []string
	for _, name := range reservations(t, dataDir, network) {
		data, err := os.ReadFile(filepath.Join(dataDir, network, name))
		if err != nil {
			t.Fatal(err)
		}
		id, _, _ := strings.Cut(string(data), "\r\n")
		out = append(out, id)
	}
	return out
}
