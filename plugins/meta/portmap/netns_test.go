package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// The privileged tests run a node the way kubelet does: the suite's bridge
// (with host-local) gives each pod namespace an address, then portmap runs
// chained after it, every binary inside the node's namespace. An "outside"
// namespace joined to the node by a veth plays a client on the network.
const (
	network = "pmnet"
	nodeV4  = "198.51.100.1" // the node's address on the outside link
	otherV4 = "198.51.100.3" // a second node address, for hostIP tests
	nodeV6  = "2001:db8:1::1"
	otherV6 = "2001:db8:1::3"
)

// The values of the backend key, as a configuration spells them.
const (
	backendIPTables = "iptables"
	backendNFTables = "nftables"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// node is a node namespace with its outside client namespace.
type node struct {
	t       *testing.T
	ns, out *netnstest.NS
	bin     string
	dataDir string
	backend string
}

func newNode(t *testing.T, backend string) *node {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	bin := testutil.Plugins(t, "plugins/main/bridge", "plugins/ipam/host-local", "plugins/meta/portmap")
	n := &node{t: t, ns: netnstest.New(t, "pm-node"), out: netnstest.New(t, "pm-out"), bin: bin, dataDir: t.TempDir(), backend: backend}
	// Without duplicate address detection new links route IPv6 at once,
	// instead of dropping the first connections for a second or two.
	for _, ns := range []*netnstest.NS{n.ns, n.out} {
		ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	n.ns.Run(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", n.out.Name)
	for _, a := range []string{nodeV4 + "/24", otherV4 + "/24"} {
		n.ns.Run(t, "ip", "addr", "add", a, "dev", "up0")
	}
	for _, a := range []string{nodeV6 + "/64", otherV6 + "/64"} {
		n.ns.Run(t, "ip", "addr", "add", a, "dev", "up0", "nodad")
	}
	n.out.Run(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "up1")
	n.out.Run(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "up1", "nodad")
	n.ns.Run(t, "ip", "link", "set", "up0", "up")
	n.out.Run(t, "ip", "link", "set", "up1", "up")
	n.ns.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	n.kubeProxy()
	return n
}

// kubeProxy gives the node's nat tables what a Kubernetes node has before
// any hostPort: kube-proxy's chain and its jumps from PREROUTING and
// OUTPUT. The rules also show that portmap leaves others' rules alone,
// and the chains exist before portmap runs, as on a real node (iptables-nft
// creates a built-in chain on first use and never deletes it).
func (n *node) kubeProxy() {
	rules := "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n" +
		"-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n"
	for _, restore := range []string{"iptables-restore", "ip6tables-restore"} {
		c := exec.Command("ip", "netns", "exec", n.ns.Name, restore, "--noflush")
		c.Stdin = strings.NewReader(rules)
		if out, err := c.CombinedOutput(); err != nil {
			n.t.Fatalf("%s: %v\n%s", restore, err, out)
		}
	}
}

// pod is a pod namespace attached by bridge; prev is bridge's result.
type pod struct {
	id   string
	ns   *netnstest.NS
	prev json.RawMessage
	v4   netip.Addr
	v6   netip.Addr
}

// call runs a plugin binary inside the node for the pod, as a runtime would.
func (n *node) call(plugin, cmd string, p *pod, conf any) (string, error) {
	stdin, err := json.Marshal(conf)
	if err != nil {
		n.t.Fatal(err)
	}
	c := exec.Command("ip", "netns", "exec", n.ns.Name, filepath.Join(n.bin, plugin))
	c.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + p.id,
		"CNI_NETNS=" + p.ns.Path, "CNI_IFNAME=eth0", "CNI_PATH=" + n.bin}
	c.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s %s", plugin, cmd, err, out.String(), errOut.String())
	}
	return out.String(), nil
}

func (n *node) mustCall(plugin, cmd string, p *pod, conf any) string {
	n.t.Helper()
	out, err := n.call(plugin, cmd, p, conf)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

func (n *node) bridgeConf() map[string]any {
	return map[string]any{"cniVersion": "1.1.0", "name": network, "type": "bridge", "bridge": "pmbr0",
		"isGateway": true, "ipMasq": true, "hairpinMode": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": n.dataDir,
			"ranges": []any{[]any{map[string]any{"subnet": "10.88.0.0/24"}}, []any{map[string]any{"subnet": "fd88::/64"}}},
			"routes": []any{map[string]any{"dst": "0.0.0.0/0"}, map[string]any{"dst": "::/0"}}}}
}

// addPod attaches a new pod namespace to the bridge and starts its
// servers: TCP on 80 and 82, UDP on 81, each answering with the pod's id.
func (n *node) addPod(id string) *pod {
	n.t.Helper()
	p := &pod{id: id, ns: netnstest.New(n.t, "pm-pod")}
	p.ns.Run(n.t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	p.prev = json.RawMessage(n.mustCall("bridge", "ADD", p, n.bridgeConf()))
	var res current.Result
	if err := json.Unmarshal(p.prev, &res); err != nil {
		n.t.Fatal(err)
	}
	for _, ip := range res.IPs {
		if a, _ := netip.AddrFromSlice(ip.Address.IP); a.Unmap().Is4() {
			p.v4 = a.Unmap()
		} else {
			p.v6 = a
		}
	}
	serve(n.t, p.ns, id)
	return p
}

// portmapConf is portmap's configuration with prevResult and mappings;
// maps nil leaves runtimeConfig out.
func (n *node) portmapConf(p *pod, maps []map[string]any) map[string]any {
	c := map[string]any{"cniVersion": "1.1.0", "name": network, "type": "portmap", "backend": n.backend}
	if p != nil {
		c["prevResult"] = p.prev
	}
	if maps != nil {
		c["runtimeConfig"] = map[string]any{"portMappings": maps}
	}
	return c
}

func mapping(host, cont int, proto, hostIP string) map[string]any {
	m := map[string]any{"hostPort": host, "containerPort": cont, "protocol": proto}
	if hostIP != "" {
		m["hostIP"] = hostIP
	}
	return m
}

var countersRE = regexp.MustCompile(`\[\d+:\d+\]|counter packets \d+ bytes \d+`)

// ruleset is the node's whole netfilter state as text, counters stripped.
func (n *node) ruleset() string {
	var b strings.Builder
	for _, cmd := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"nft", "list", "ruleset"}} {
		out, err := exec.Command("ip", append([]string{"netns", "exec", n.ns.Name}, cmd...)...).Output()
		if err != nil {
			n.t.Fatalf("%v: %v", cmd, err)
		}
		for line := range strings.Lines(string(out)) {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(countersRE.ReplaceAllString(line, ""))
			}
		}
	}
	return b.String()
}

// serve answers TCP connections on 80 and 82 and UDP datagrams on 81 with
// "<id> <peer address>", on both families.
func serve(t *testing.T, ns *netnstest.NS, id string) {
	t.Helper()
	var closers []io.Closer
	ns.Do(t, func() error {
		for _, port := range []string{":80", ":82"} {
			l, err := net.Listen("tcp", port)
			if err != nil {
				return err
			}
			closers = append(closers, l)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s", id, c.RemoteAddr())
					c.Close()
				}
			}()
		}
		u, err := net.ListenPacket("udp", ":81")
		if err != nil {
			return err
		}
		closers = append(closers, u)
		go func() {
			buf := make([]byte, 64)
			for {
				_, from, err := u.ReadFrom(buf)
				if err != nil {
					return
				}
				fmt.Fprint(writerTo{u, from}, id+" "+from.String())
			}
		}()
		return nil
	})
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
}

type writerTo struct {
	c  net.PacketConn
	to net.Addr
}

func (w writerTo) Write(b []byte) (int, error) { return w.c.WriteTo(b, w.to) }

// ask connects from inside ns and returns the answer.
func ask(ns *netnstest.NS, proto, addr string) (string, error) {
	var c net.Conn
	err := netns.Do(ns.Path, func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 2 * time.Second}).Dial(proto, addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if proto == "udp" {
		if _, err := c.Write([]byte("?")); err != nil {
			return "", err
		}
		buf := make([]byte, 128)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// udpFlow opens a UDP socket from inside ns to addr and sends one
// datagram, which nobody answers yet but conntrack remembers.
func udpFlow(t *testing.T, ns *netnstest.NS, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	ns.Do(t, func() error {
		var err error
		c, err = net.Dial("udp", addr)
		return err
	})
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("?")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the datagram (and its ICMP error) pass
	return c
}

// exchange sends a datagram on c, the same flow as before, and returns the answer.
func exchange(c net.Conn) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 128)
	for range 2 { // the first write may report the ICMP error of the earlier one
		if _, err := c.Write([]byte("?")); err != nil {
			continue
		}
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return "", err
		}
	}
	return "", errors.New("no answer")
}

// reaches fails unless a client in from gets pod id's answer at addr.
func reaches(t *testing.T, from *netnstest.NS, proto, addr, id string) string {
	t.Helper()
	got, err := ask(from, proto, addr)
	if err != nil || !strings.HasPrefix(got, id+" ") {
		t.Fatalf("%s %s from %s: got %q, %v; want an answer from %s", proto, addr, from.Name, got, err, id)
	}
	return strings.TrimPrefix(got, id+" ")
}

// unreachable fails if a TCP client in from gets any answer at addr.
func unreachable(t *testing.T, from *netnstest.NS, addr string) {
	t.Helper()
	if got, err := ask(from, "tcp", addr); err == nil {
		t.Fatalf("tcp %s from %s answered %q; want no mapping", addr, from.Name, got)
	}
}
