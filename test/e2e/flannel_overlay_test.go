package e2e

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// flannelPod is a pod attached through the node's flannel conflist.
type flannelPod struct {
	node *sdNode
	c    *libcniClient
	ns   *netnstest.NS
	rt   *libcni.RuntimeConf
	res  *current.Result
}

// TestFlannelChainWithSubnetd: the node's conflist (flannel + portmap)
// through libcni on two nodes where subnetd leases the subnets from etcd in
// the underlay. Each pod gets an address of its node's lease, the pods reach
// each other over the overlay, a hostPort answers from the underlay, CHECK
// passes, and DEL leaves no veth, reservation, cached result, saved
// configuration or port-mapping rule.
func TestFlannelChainWithSubnetd(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	o := newOverlay(t, "/e2e/flannel", `{"Network":"10.251.0.0/16","Backend":{"Type":"vxlan"}}`)
	var pods []*flannelPod
	for i := 1; i <= 2; i++ {
		o.startSubnetd(o.addNode(i), nil)
	}
	for i, n := range o.nodes {
		o.waitReady(n)
		var caps map[string]any
		if i == 0 {
			caps = map[string]any{"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}}
		}
		pods = append(pods, o.addFlannelPod(n, caps))
	}
	for _, from := range pods {
		for _, to := range pods {
			if from != to {
				pingAll(t, from.ns, addrsOf(to.res))
			}
		}
	}
	serveHTTP(t, pods[0].ns, ":80", "hello from a pod")
	if code, body := o.ul.HTTP(pods[0].node.ip+":8080", "GET", "/", nil); code != 200 || body != "hello from a pod" {
		t.Fatalf("hostPort 8080 on %s from the underlay: HTTP %d %q\n%s", pods[0].node.name, code, body, o.logs())
	}
	for _, p := range pods {
		if err := p.do(t, p.c.cni.CheckNetworkList); err != nil {
			t.Fatalf("CHECK on %s: %v", p.node.name, err)
		}
		if err := p.do(t, p.c.cni.DelNetworkList); err != nil {
			t.Fatalf("DEL on %s: %v", p.node.name, err)
		}
		detached(t, p.ns, p.res)
		// nothingLeft without its veth check: the node's uplink is a veth too.
		if veths := onlyUplink(t, p.node.ns); len(veths) != 1 || veths[0] != "eth0" {
			t.Errorf("veths on %s after DEL: %v, want only the uplink eth0", p.node.name, veths)
		}
		if r := reservations(t, p.c.dataDir(), "cbr0"); len(r) != 0 {
			t.Errorf("reservations left on %s: %v", p.node.name, r)
		}
		if r := dirNames(t, filepath.Join(p.c.cacheDir(), "results")); len(r) != 0 {
			t.Errorf("cached results left on %s: %v", p.node.name, r)
		}
		if saved := dirNames(t, filepath.Join(p.node.dir, "flannel")); len(saved) != 0 {
			t.Errorf("saved configurations left on %s: %v", p.node.name, saved)
		}
		if nat := p.node.ns.Run(t, "iptables-save", "-t", "nat"); strings.Contains(nat, "--dport 8080") {
			t.Errorf("port-mapping rules left on %s:\n%s", p.node.name, nat)
		}
	}
}

// addFlannelPod installs the flannel conflist on n (pointed at the node's
// subnet.env) and attaches a new pod with the given capability arguments.
func (o *overlayTest) addFlannelPod(n *sdNode, caps map[string]any) *flannelPod {
	t := o.t
	conflist := renderFlannel(t, t.TempDir(), map[string]any{"subnetFile": n.envPath(), "dataDir": filepath.Join(n.dir, "flannel")})
	cniPath := cmp.Or(n.cniPath, binDir)
	p := &flannelPod{node: n, c: newLibcniClientIn(t, n.ns, conflist, cniPath), ns: netnstest.New(t, "cni-e2e-pod")}
	p.rt = &libcni.RuntimeConf{ContainerID: p.c.containerID(p.ns), NetNS: p.ns.Path, IfName: "eth0", CapabilityArgs: caps}
	err := p.c.inNode(t, func(ctx context.Context) error {
		r, err := p.c.cni.AddNetworkList(ctx, p.c.list, p.rt)
		if err == nil {
			p.res, err = current.NewResultFromResult(r)
		}
		return err
	})
	if err != nil {
		t.Fatalf("ADD on %s: %v\n%s", n.name, err, o.logs())
	}
	attached(t, p.ns, p.res)
	lease := o.env(n).Subnet.Masked()
	for _, ip := range p.res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP.To4()); ok && !lease.Contains(a) {
			t.Fatalf("pod on %s got %s, outside the node's lease %s", n.name, ip.Address.String(), lease)
		}
	}
	return p
}

// do runs a libcni verb for the pod, inside its node, with its runtime conf.
func (p *flannelPod) do(t *testing.T, verb func(context.Context, *libcni.NetworkConfigList, *libcni.RuntimeConf) error) error {
	return p.c.inNode(t, func(ctx context.Context) error { return verb(ctx, p.c.list, p.rt) })
}

// serveHTTP answers every request with body from a listener opened inside
// the pod; it stops when the test ends.
func serveHTTP(t *testing.T, pod *netnstest.NS, addr, body string) {
	t.Helper()
	serveFunc(t, pod, addr, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) })
}

// serveFunc serves h from a listener opened inside ns until the test ends.
func serveFunc(t *testing.T, ns *netnstest.NS, addr string, h http.HandlerFunc) {
	t.Helper()
	var ln net.Listener
	err := netns.Do(ns.Path, func() error {
		var err error
		ln, err = net.Listen("tcp", addr) // the socket belongs to the namespace it was made in
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", ns.Name, err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// onlyUplink lists the node's veths once only its uplink is left, or after
// 5 s: the kernel tears the pod side's namespace references down
// asynchronously (see nothingLeft).
func onlyUplink(t *testing.T, node *netnstest.NS) []string {
	var veths []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		veths = node.Links(t, "type", "veth")
		if (len(veths) == 1 && veths[0] == "eth0") || time.Now().After(deadline) {
			return veths
		}
	}
}
