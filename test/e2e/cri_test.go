package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cnisuite/cni/internal/testutil"
	kubetest "github.com/cnisuite/cni/test/kube"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// The plugins under containerd's CRI, as kubelet drives them but without
// kubelet: test/kube's node (containerd in a node namespace on an
// underlay), our plugins in its bin_dir and a bridge + host-local + portmap
// conflist in its conf_dir.
const (
	criUnderlay = "192.168.81.1"
	criNodeIP   = "192.168.81.10"
	criNet      = "cri-e2e"
	criConflist = `{"cniVersion":"1.0.0","name":"cri-e2e","plugins":[
  {"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,
   "ipam":{"type":"host-local","ranges":[[{"subnet":"10.86.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
  {"type":"portmap","capabilities":{"portMappings":true}}]}`
)

var criSubnet = netip.MustParsePrefix("10.86.0.0/24")

type criTest struct {
	ul   *netnstest.NS
	node *kubetest.Node
	pods []kubetest.Pod // every pod run, removed or not
}

// newCRITest makes the underlay, the node joined to it (forwarding on, as
// a node's) and starts containerd with the conflist.
func newCRITest(t *testing.T) *criTest {
	netnstest.SkipUnlessRoot(t)
	c := &criTest{ul: netnstest.New(t, "cri-ul")}
	c.ul.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	c.ul.Run(t, "ip", "addr", "add", criUnderlay+"/24", "dev", "br0")
	c.ul.Run(t, "ip", "link", "set", "br0", "up")
	ns := netnstest.New(t, "cri-n")
	c.ul.Run(t, "ip", "link", "add", "criv1", "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	c.ul.Run(t, "ip", "link", "set", "criv1", "master", "br0", "up")
	ns.Run(t, "ip", "addr", "add", criNodeIP+"/24", "dev", "eth0")
	ns.Run(t, "ip", "link", "set", "eth0", "up")
	ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	confDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, "10-cri-e2e.conflist"), []byte(criConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	c.node = kubetest.StartNode(t, kubetest.NodeOptions{NS: ns, PluginDir: binDir, ConfDir: confDir, Pause: testImages(t)[0]})
	return c
}

// buildImages builds the test images (pause, echo) once, beside the plugins.
var buildImages = sync.OnceValues(func() (imgs [2]testutil.Image, err error) {
	imgs[0], imgs[1], err = testutil.BuildTestImages(filepath.Join(filepath.Dir(binDir), "images"))
	return imgs, err
})

// testImages returns the pause and the echo image.
func testImages(t *testing.T) [2]testutil.Image {
	t.Helper()
	imgs, err := buildImages()
	if err != nil {
		t.Fatal(err)
	}
	return imgs
}

// run runs a pod sandbox and checks its address.
func (c *criTest) run(t *testing.T, name string, ports ...*runtimeapi.PortMapping) kubetest.Pod {
	t.Helper()
	p := c.node.RunPod(t, c.node.PodConfig(name, ports...))
	c.pods = append(c.pods, p)
	if !criSubnet.Contains(p.IP) {
		t.Fatalf("pod %s has address %v, want one of %s", name, p.IP, criSubnet)
	}
	return p
}

// podNS names a pod's network namespace for the namespace fixtures' HTTP.
func podNS(name string, p kubetest.Pod) *netnstest.NS {
	return &netnstest.NS{Name: name, Path: p.NetNS()}
}

// get fetches / from addr inside from, expecting body.
func get(t *testing.T, from *netnstest.NS, addr, body string) {
	t.Helper()
	if code, got := from.HTTP(addr, "GET", "/", nil); code != 200 || got != body {
		t.Errorf("from %s, GET http://%s/: %d %q, want 200 %q", from.Name, addr, code, got, body)
	}
}

// TestCRI: pod sandboxes that containerd's CRI runs with our plugins get
// addresses of the conflist's range, reach each other, and a hostPort
// reaches a pod from outside the node; 10 pods run at once get distinct
// addresses; containerd restarted under running pods keeps them
// working; once every pod is removed no reservation, iptables or nft rule,
// CNI cache entry, veth or namespace pin is left.
func TestCRI(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	c := newCRITest(t)
	web := c.run(t, "web", &runtimeapi.PortMapping{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 8080})
	client := c.run(t, "client")
	t.Run("traffic", func(t *testing.T) {
		serveHTTP(t, podNS("web", web), ":80", "web")
		serveHTTP(t, podNS("client", client), ":80", "client")
		c.traffic(t, web, client)
	})
	if t.Failed() {
		return
	}
	t.Run("10 parallel pods", func(t *testing.T) { c.parallel(t, 10) })
	t.Run("containerd restart", func(t *testing.T) {
		serveHTTP(t, podNS("web", web), ":80", "web")
		serveHTTP(t, podNS("client", client), ":80", "client")
		c.node.RestartContainerd(t)
		for _, p := range []kubetest.Pod{web, client} {
			if again := c.node.Pod(t, p.ID); again != p {
				t.Errorf("after containerd's restart the pod is %+v, was %+v", again, p)
			}
		}
		c.traffic(t, web, client)
	})
	t.Run("all removed", func(t *testing.T) {
		// Where nothingLeft looks, every pod has its state until then.
		if r := reservations(t, c.node.Path("/var/lib/cni/networks"), criNet); len(r) != len(c.pods) {
			t.Fatalf("host-local reserves %v for %d pods", r, len(c.pods))
		}
		if cache := dirNames(t, c.node.Path("/var/lib/cni/results")); len(cache) < len(c.pods) {
			t.Fatalf("the CNI cache holds %v for %d pods", cache, len(c.pods))
		}
		c.removeAll(t)
		c.nothingLeft(t)
	})
}

// traffic: each pod reaches the other's server, and the underlay reaches
// web's through the node's hostPort 8080.
func (c *criTest) traffic(t *testing.T, web, client kubetest.Pod) {
	t.Helper()
	get(t, podNS("client", client), netip.AddrPortFrom(web.IP, 80).String(), "web")
	get(t, podNS("web", web), netip.AddrPortFrom(client.IP, 80).String(), "client")
	get(t, c.ul, criNodeIP+":8080", "web")
}

// parallel runs n pod sandboxes at once, as kubelet does for a burst of
// pods, and checks that each got an address of its own and is reached.
func (c *criTest) parallel(t *testing.T, n int) {
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			r, err := c.node.CRI.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: c.node.PodConfig(fmt.Sprintf("par%d", i))})
			if err == nil {
				ids[i] = r.PodSandboxId
			}
			errs[i] = err
		})
	}
	wg.Wait()
	t.Logf("%d pod sandboxes run at once in %v", n, time.Since(start).Round(time.Millisecond))
	seen := map[netip.Addr]string{}
	client := podNS("client", c.pods[1])
	for i, id := range ids {
		if errs[i] != nil {
			t.Errorf("RunPodSandbox par%d: %v", i, errs[i])
			continue
		}
		p := c.node.Pod(t, id)
		c.pods = append(c.pods, p)
		if other, dup := seen[p.IP]; dup || !criSubnet.Contains(p.IP) {
			t.Errorf("par%d has address %v (outside %s, or also %s's)", i, p.IP, criSubnet, other)
		}
		seen[p.IP] = fmt.Sprintf("par%d", i)
		serveHTTP(t, podNS(seen[p.IP], p), ":80", seen[p.IP])
		get(t, client, netip.AddrPortFrom(p.IP, 80).String(), seen[p.IP])
	}
}

// removeAll stops and removes every pod at once, as kubelet does when a
// node is drained.
func (c *criTest) removeAll(t *testing.T) {
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range c.pods {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if _, err := c.node.CRI.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.ID}); err != nil {
				t.Errorf("StopPodSandbox %s: %v", p.ID, err)
			}
			if _, err := c.node.CRI.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.ID}); err != nil {
				t.Errorf("RemovePodSandbox %s: %v", p.ID, err)
			}
		})
	}
	wg.Wait()
	t.Logf("%d pod sandboxes stopped and removed at once in %v", len(c.pods), time.Since(start).Round(time.Millisecond))
}

// nothingLeft: no pod has state left, and no rule maps the hostPort.
func (c *criTest) nothingLeft(t *testing.T) {
	t.Helper()
	noPodState(t, c.node, criNet, c.pods)
	if rules := c.node.NS.Run(t, "iptables-save") + c.node.NS.Run(t, "nft", "list", "ruleset"); strings.Contains(rules, "dport 8080") {
		t.Error("rules still map hostPort 8080")
	}
}

// noPodState: for pods gone from the node, no address reserved in network,
// no CNI cache entry or flannel save, no iptables or nft rule naming a pod
// (its sandbox ID, its address), no veth but the node's uplink, no
// namespace pin, no pause process.
func noPodState(t *testing.T, n *kubetest.Node, network string, pods []kubetest.Pod) {
	t.Helper()
	if r := reservations(t, n.Path("/var/lib/cni/networks"), network); len(r) > 0 {
		t.Errorf("host-local still reserves %v", r)
	}
	for _, dir := range []string{"/var/lib/cni/results", "/var/lib/cni/flannel"} {
		if left := dirNames(t, n.Path(dir)); len(left) > 0 {
			t.Errorf("%s still holds %v", dir, left)
		}
	}
	rules := n.NS.Run(t, "iptables-save") + n.NS.Run(t, "ip6tables-save") + n.NS.Run(t, "nft", "list", "ruleset")
	for _, p := range pods {
		if re := regexp.MustCompile(p.ID + `|\b` + regexp.QuoteMeta(p.IP.String()) + `\b`); re.MatchString(rules) {
			t.Errorf("rules still name pod %s (%s): %q", p.ID, p.IP, re.FindAllString(rules, -1))
		}
	}
	if veths := onlyUplink(t, n.NS); len(veths) != 1 {
		t.Errorf("veths left in the node: %v", veths)
	}
	if pins := dirNames(t, n.Path("/run/netns")); len(pins) > 0 {
		t.Errorf("namespace pins left: %v", pins)
	}
	for _, p := range pods {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID)); err == nil {
			t.Errorf("pause process %d of pod %s still runs", p.PID, p.ID)
		}
	}
}
