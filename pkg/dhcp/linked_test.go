package dhcp

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
	"github.com/cnisuite/cni/pkg/dhcp/dhcptest"
)

// macvlan runs the macvlan binary's verb in the node on a link named net1
// in the pod, with a CNI_PATH that holds no dhcp binary: dhcp IPAM works
// only in macvlan's own process.
func (e *env) macvlan(verb string, conf []byte) ([]byte, error) {
	e.t.Helper()
	bin := filepath.Join(testutil.Plugins(e.t, "plugins/main/macvlan"), "macvlan")
	cmd := exec.Command("ip", "netns", "exec", e.node.Name, bin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+verb, "CNI_CONTAINERID=c1", "CNI_NETNS="+e.pod.Path, "CNI_IFNAME=net1", "CNI_PATH="+e.t.TempDir())
	cmd.Stdin = bytes.NewReader(conf)
	return cmd.Output()
}

// TestLinkedIntoMacvlan: an interface plugin runs dhcp IPAM in its own
// process, a client of the daemon: with no dhcp binary in CNI_PATH,
// macvlan's ADD gets a lease that the pod's link holds, CHECK passes, and
// DEL releases the lease on the server and deletes the link.
func TestLinkedIntoMacvlan(t *testing.T) {
	e := newEnv(t)
	e.node.Run(t, "ip", "link", "add", "m0", "up", "type", "veth", "peer", "name", "m0p")
	e.node.Run(t, "ip", "link", "set", "m0p", "master", "br0", "up")
	conf, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "dhnet", "type": "macvlan", "master": "m0", "mode": "bridge",
		"ipam": map[string]any{"type": "dhcp", "daemonSocketPath": e.Socket()}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.macvlan("ADD", conf)
	if err != nil {
		t.Fatalf("ADD: %v\n%s\ndaemon log:\n%s", err, out, e.Logs.String())
	}
	res := &current.Result{}
	if err := json.Unmarshal(out, res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("ADD printed %s: %v", out, err)
	}
	ip := res.IPs[0].Address.IP.String()
	if e.Leases()[ip] == "" || !strings.Contains(e.pod.Run(t, "ip", "-o", "addr", "show", "dev", "net1"), " "+res.IPs[0].Address.String()+" ") {
		t.Fatalf("the lease of %s is not on the server (%v) or net1", ip, e.Leases())
	}
	if out, err := e.macvlan("CHECK", withPrev(t, conf, res)); err != nil {
		t.Errorf("CHECK: %v\n%s", err, out)
	}
	if out, err := e.macvlan("DEL", conf); err != nil {
		t.Fatalf("DEL: %v\n%s", err, out)
	}
	e.WaitLeases("macvlan's DEL releases", 5*time.Second, func(l map[string]string) bool { return l[ip] == "" })
	if slices.Contains(e.pod.Links(t), "net1") {
		t.Error("DEL left net1 in the pod")
	}
}

// referenceDHCP builds the reference plugins' dhcp v1.9.1 from the module
// cache, which serves as the module proxy (nothing is downloaded), or skips.
func referenceDHCP(t *testing.T) string {
	t.Helper()
	cache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Skipf("go env: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "install", "github.com/containernetworking/plugins/plugins/ipam/dhcp@v1.9.1")
	cmd.Dir = dir // outside our module
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=", "GOBIN="+dir,
		"GOPROXY=file://"+strings.TrimSpace(string(cache))+"/cache/download")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("the reference dhcp v1.9.1 cannot be built from the module cache: %v\n%s", err, out)
	}
	return filepath.Join(dir, "dhcp")
}

// TestReferenceDaemonLease: the plugin is a client of the reference's own
// daemon: ADD returns the lease it acquired, DEL has it release that lease
// (found by the client ID it builds from the request's fields), and CHECK,
// which that daemon lacks, says what to run instead.
func TestReferenceDaemonLease(t *testing.T) {
	e := newEnv(t)
	bin := referenceDHCP(t)
	e.StopDaemon()
	e.StartReferenceDaemon(e.node, bin)
	conf := e.conf("1.1.0", nil)
	r := e.add("c1", conf)
	ip := r.IPs[0].Address.IP.String()
	if e.Leases()[ip] == "" || len(r.Routes) != 1 || r.Routes[0].GW.String() != dhcptest.ServerIP {
		t.Fatalf("ADD gave %v; the server's leases %v", r, e.Leases())
	}
	err := dhcpclient.Plugin{}.Check(context.Background(), e.args("CHECK", "c1", withPrev(t, conf, r)))
	if err == nil || !strings.Contains(err.Error(), "run this suite's `dhcp daemon`") {
		t.Errorf("CHECK against the reference daemon: %v", err)
	}
	e.del("c1", conf)
	// Its DHCPRELEASE leaves from 0.0.0.0 (nclient4's raw socket), on
	// which dnsmasq logs nothing: its log line is what shows the release.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(e.Logs.String(), "c1/dhnet/eth0: releasing lease"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the reference daemon did not release the lease on DEL:\n%s", e.Logs.String())
		}
	}
}

// TestReferencePluginLease: the reference's plugin is a client of our
// daemon: its ADD gets a lease, its DEL has the daemon release it.
func TestReferencePluginLease(t *testing.T) {
	e := newEnv(t)
	bin := referenceDHCP(t)
	conf := e.conf("1.0.0", nil)
	run := func(verb string) []byte {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "CNI_COMMAND="+verb, "CNI_CONTAINERID=c1", "CNI_NETNS="+e.pod.Path, "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent")
		cmd.Stdin = bytes.NewReader(conf)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("the reference plugin's %s: %v\n%s\ndaemon log:\n%s", verb, err, out, e.Logs.String())
		}
		return out
	}
	res := &current.Result{}
	if out := run("ADD"); json.Unmarshal(out, res) != nil || len(res.IPs) != 1 || e.Leases()[res.IPs[0].Address.IP.String()] == "" {
		t.Fatalf("the reference plugin's ADD printed %s; the server's leases %v", out, e.Leases())
	}
	run("DEL")
	e.WaitLeases("our daemon releases on the reference plugin's DEL", 5*time.Second, func(l map[string]string) bool { return len(l) == 0 })
}
