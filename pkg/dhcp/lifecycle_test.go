package dhcp

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/proc"
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
	"github.com/cnisuite/cni/pkg/dhcp/dhcptest"
	"github.com/cnisuite/cni/pkg/netconf"
)

// add runs ADD and returns the address the server leased.
func (e *env) add(containerID string, conf []byte) *current.Result {
	e.t.Helper()
	res, err := dhcpclient.Plugin{}.Add(context.Background(), e.args("ADD", containerID, conf))
	if err != nil {
		e.t.Fatalf("ADD: %v\ndaemon log:\n%s", err, e.Logs.String())
	}
	r := res.(*current.Result)
	if len(r.IPs) != 1 || !strings.HasPrefix(r.IPs[0].Address.IP.String(), "10.77.0.") || r.IPs[0].Gateway.String() != dhcptest.ServerIP {
		e.t.Fatalf("ADD gave %v", r)
	}
	return r
}

func (e *env) del(containerID string, conf []byte) {
	e.t.Helper()
	if err := (dhcpclient.Plugin{}).Del(context.Background(), e.args("DEL", containerID, conf)); err != nil {
		e.t.Fatalf("DEL: %v\ndaemon log:\n%s", err, e.Logs.String())
	}
}

// TestLifecycle: the server leases an address (and the default route via
// its router) that CHECK finds; DEL releases it on the server, also a
// second time; CHECK then fails.
func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	r := e.add("c1", conf)
	ip := r.IPs[0].Address.IP.String()
	if len(r.Routes) != 1 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[0].GW.String() != dhcptest.ServerIP {
		t.Errorf("routes %v, want the default via %s", r.Routes, dhcptest.ServerIP)
	}
	if e.Leases()[ip] == "" {
		t.Fatalf("the server lists no lease of %s: %v", ip, e.Leases())
	}
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		var out bytes.Buffer
		if err := cniplugin.PrintResult(&out, r, v); err != nil || !strings.Contains(out.String(), ip) || !strings.Contains(out.String(), `"cniVersion": "`+v+`"`) {
			t.Errorf("the result at %s: %v\n%s", v, err, out.String())
		}
	}
	again := e.add("c1", conf)
	if !again.IPs[0].Address.IP.Equal(r.IPs[0].Address.IP) {
		t.Errorf("a second ADD gave %s, the first %s", again.IPs[0].Address.IP, ip)
	}
	checkConf := withPrev(t, e.conf("1.1.0", nil), r)
	if err := (dhcpclient.Plugin{}).Check(context.Background(), e.args("CHECK", "c1", checkConf)); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	e.del("c1", conf)
	e.WaitLeases("the server frees the address after DEL", 5*time.Second, func(l map[string]string) bool { return l[ip] == "" })
	e.del("c1", conf)
	if err := (dhcpclient.Plugin{}).Check(context.Background(), e.args("CHECK", "c1", checkConf)); err == nil || !strings.Contains(err.Error(), "no lease") {
		t.Errorf("CHECK after DEL: %v, want no lease", err)
	}
}

// TestKeys: provide's fromArg reaches the server (dnsmasq records the
// host name the client sends) and priority is the routes' metric.
func TestKeys(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.0.0", map[string]any{"priority": 50, "provide": []map[string]string{{"option": "host-name", "fromArg": "K8S_POD_NAME"}},
		"request": []map[string]any{{"option": "subnet-mask"}, {"option": 3}}})
	a := e.args("ADD", "c1", conf)
	a.Args = "IgnoreUnknown=1;K8S_POD_NAME=web-0"
	res, err := dhcpclient.Plugin{}.Add(context.Background(), a)
	if err != nil {
		t.Fatalf("ADD: %v\n%s", err, e.Logs.String())
	}
	r := res.(*current.Result)
	if len(r.Routes) != 1 || r.Routes[0].Priority != 50 {
		t.Errorf("routes %v, want one of priority 50", r.Routes)
	}
	b, _ := os.ReadFile(e.LeaseFile())
	if !strings.Contains(string(b), r.IPs[0].Address.IP.String()+" web-0 ") {
		t.Errorf("the server's leases do not name the host web-0:\n%s", b)
	}
	if err := (dhcpclient.Plugin{}).Status(context.Background(), a); err != nil {
		t.Errorf("STATUS with the daemon up: %v", err)
	}
}

// TestRenewal: the daemon renews at T1, so the server's expiry moves on.
func TestRenewal(t *testing.T) {
	e := newEnv(t)
	ip := e.add("c1", e.conf("1.1.0", nil)).IPs[0].Address.IP.String()
	first := e.Leases()[ip]
	e.WaitLeases("a renewal moves the expiry", 3*dhcptest.RenewSecs*time.Second, func(l map[string]string) bool { return l[ip] > first })
}

// TestRestart: a restarted daemon resumes the saved lease, renews it, and
// its DEL releases it.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	ip := e.add("c1", conf).IPs[0].Address.IP.String()
	e.StopDaemon()
	stopped := e.Leases()[ip]
	if stopped == "" {
		t.Fatalf("stopping the daemon released the lease of %s", ip)
	}
	e.StartDaemon(e.node)
	e.WaitLeases("the restarted daemon renews", 3*dhcptest.RenewSecs*time.Second, func(l map[string]string) bool { return l[ip] > stopped })
	e.del("c1", conf)
	e.WaitLeases("DEL after a restart releases", 5*time.Second, func(l map[string]string) bool { return l[ip] == "" })
}

// TestDelAfterNetnsGone: with the pod's namespace deleted, DEL still
// releases the lease on the server, sent from the daemon's namespace.
func TestDelAfterNetnsGone(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	ip := e.add("c1", conf).IPs[0].Address.IP.String()
	e.pod.Delete(t)
	e.del("c1", conf)
	e.WaitLeases("DEL after the netns is gone releases", 5*time.Second, func(l map[string]string) bool { return l[ip] == "" })
}

// TestReleaseFromPod: when the node cannot reach the server, DEL sends
// the release through the pod's interface, which holds the leased address
// (the interface plugin's IPAM DEL runs before it deletes the interface).
func TestReleaseFromPod(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	r := e.add("c1", conf)
	ip := r.IPs[0].Address.IP.String()
	e.pod.Run(t, "ip", "addr", "add", r.IPs[0].Address.String(), "dev", "eth0")
	e.node.Run(t, "ip", "addr", "flush", "dev", "br0")
	e.del("c1", conf)
	e.WaitLeases("DEL releases through the pod's interface", 5*time.Second, func(l map[string]string) bool { return l[ip] == "" })
}

// TestNoServer: an ADD that no server answers fails with code 11 once the
// daemon's -resendtimeout is over, and leaves no lease behind, saved or held.
func TestNoServer(t *testing.T) {
	e := newEnv(t)
	e.StopDaemon()
	e.StartDaemon(e.node, "-resendtimeout", "2s")
	proc.Stop(e.Server, 5*time.Second)
	conf := e.conf("1.1.0", nil)
	_, err := dhcpclient.Plugin{}.Add(context.Background(), e.args("ADD", "c1", conf))
	if ce := cniplugin.ToCNIError(err); ce == nil || ce.Code != netconf.CodeTryAgainLater || !strings.Contains(ce.Msg, "resendtimeout") {
		t.Fatalf("ADD without a server: %v, want code 11 naming -resendtimeout", ce)
	}
	if saved, _ := filepath.Glob(filepath.Join(e.Dir, "state", "*")); len(saved) > 0 {
		t.Errorf("a failed ADD left %v", saved)
	}
	err = dhcpclient.Plugin{}.Check(context.Background(), e.args("CHECK", "c1", withPrev(t, conf, &current.Result{CNIVersion: "1.1.0"})))
	if ce := cniplugin.ToCNIError(err); ce == nil || ce.Code != netconf.CodeUnknownContainer {
		t.Errorf("CHECK after a failed ADD: %v, want code 3", ce)
	}
}

// TestGC: GC releases the leases of this network not in the valid list.
func TestGC(t *testing.T) {
	e := newEnv(t)
	ip := e.add("c1", e.conf("1.1.0", nil)).IPs[0].Address.IP.String()
	keep := e.conf("1.1.0", nil)
	gc := withKey(t, keep, "cni.dev/valid-attachments", []map[string]string{{"containerID": "c1", "ifname": "eth0"}})
	if err := (dhcpclient.Plugin{}).GC(context.Background(), e.args("GC", "", gc)); err != nil {
		t.Fatal(err)
	}
	if e.Leases()[ip] == "" {
		t.Fatalf("GC released the valid attachment's lease")
	}
	gc = withKey(t, keep, "cni.dev/valid-attachments", []map[string]string{})
	if err := (dhcpclient.Plugin{}).GC(context.Background(), e.args("GC", "", gc)); err != nil {
		t.Fatal(err)
	}
	e.WaitLeases("GC releases a lease not in the valid list", 5*time.Second, func(l map[string]string) bool { return l[ip] == "" })
}
