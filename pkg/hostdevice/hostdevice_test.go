package hostdevice

import (
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	netnstest "github.com/cnisuite/cni/test/netns"
)

var dual = []string{"10.9.0.0/24", "fd00:9::/64"}

// wantCode fails unless err maps to the CNI code.
func wantCode(t *testing.T, err error, code uint) {
	t.Helper()
	if got := cniplugin.ToCNIError(err).Code; err == nil || got != code {
		t.Fatalf("error %v (code %d), want code %d", err, got, code)
	}
}

// lent checks that the device is in the pod as eth0, up, with its MAC and
// its node name as alias, and gone from the node.
func (e *env) lent(res *current.Result) {
	e.t.Helper()
	in := show(e.pod, "eth0")
	for _, want := range []string{"state UP", "link/ether " + devMAC, "alias " + devName} {
		if !strings.Contains(in, want) {
			e.t.Errorf("pod's eth0 lacks %q: %s", want, in)
		}
	}
	if show(e.node, devName) != "" {
		e.t.Errorf("%s still on the node", devName)
	}
	if res != nil && (len(res.Interfaces) != 1 || res.Interfaces[0].Mac != devMAC || res.Interfaces[0].Sandbox != e.pod.Path) {
		e.t.Errorf("result interfaces %+v", res.Interfaces)
	}
}

// returned checks that the device is back on the node under its name,
// without alias, up or down as wanted, and that nothing is left in the pod
// or in IPAM.
func (e *env) returned(up bool) {
	e.t.Helper()
	out := show(e.node, devName)
	switch {
	case out == "":
		e.t.Fatalf("%s not back on the node", devName)
	case strings.Contains(out, "alias"):
		e.t.Errorf("%s kept its alias: %s", devName, out)
	case strings.Contains(out, "<BROADCAST,MULTICAST,UP") != up:
		e.t.Errorf("%s up is %v, want %v: %s", devName, !up, up, out)
	}
	if show(e.pod, "eth0") != "" {
		e.t.Errorf("eth0 left in the pod")
	}
	if n := e.reservations(); n != 0 {
		e.t.Errorf("%d reservations left", n)
	}
}

// TestLifecycle: each key naming the device, with and without IPAM: ADD
// lends it, CHECK passes, DEL gives it back down (as the reference does),
// and a second DEL succeeds (the reference's fails: "Link not found").
func TestLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name, keys string
		ranges     []string
	}{
		{"device, L2", `"device":"` + devName + `"`, nil},
		{"device, dual-stack IPAM", `"device":"` + devName + `"`, dual},
		{"hwaddr", `"hwaddr":"` + devMAC + `"`, dual[:1]},
		{"device over hwaddr", `"device":"` + devName + `","hwaddr":"02:00:00:00:00:99"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			conf := e.conf(tc.keys, tc.ranges...)
			res, err := e.run("ADD", conf, nil)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			e.lent(res)
			if len(res.IPs) != len(tc.ranges) {
				t.Errorf("result IPs %v, want one per range", res.IPs)
			}
			for _, ip := range res.IPs {
				if out := e.pod.Run(t, "ip", "addr", "show", "eth0"); !strings.Contains(out, ip.Address.String()) {
					t.Errorf("address %s not on eth0:\n%s", ip.Address.String(), out)
				}
			}
			if _, err := e.run("CHECK", conf, res); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			for i := range 2 {
				if _, err := e.run("DEL", conf, nil); err != nil {
					t.Fatalf("DEL %d: %v", i+1, err)
				}
			}
			e.returned(false)
		})
	}
}

// TestDelAfterTheNetnsIsGone: the pod's namespace deleted takes a veth with
// it (a physical device would go back to the initial namespace); DEL, twice,
// succeeds and releases the addresses (the reference's fails).
func TestDelAfterTheNetnsIsGone(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(`"device":"`+devName+`"`, dual...)
	if _, err := e.run("ADD", conf, nil); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	e.pod.Delete(t)
	for i := range 2 {
		if _, err := e.run("DEL", conf, nil); err != nil {
			t.Fatalf("DEL %d: %v", i+1, err)
		}
	}
	if n := e.reservations(); n != 0 {
		t.Errorf("%d reservations left", n)
	}
	// The kernel removes the pod's links, and the veth with them, once its
	// cleanup worker reaches the deleted namespace.
	left := netnstest.Eventually(func() []string {
		return slices.DeleteFunc([]string{show(e.node, devName), show(e.node, devName+"p")}, func(s string) bool { return s == "" })
	})
	if len(left) > 0 {
		t.Errorf("the veth outlived the pod's namespace: %q", left)
	}
}

// TestDelWhileTheNameIsTaken: a new node link holding the device's name
// makes DEL fail with code 11, the device kept in the pod; once it is gone,
// DEL gives the device back.
func TestDelWhileTheNameIsTaken(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(`"device":"` + devName + `"`)
	if _, err := e.run("ADD", conf, nil); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	e.node.Run(t, "ip", "link", "add", devName, "type", "bridge")
	_, err := e.run("DEL", conf, nil)
	wantCode(t, err, netconf.CodeTryAgainLater)
	if !strings.Contains(show(e.pod, "eth0"), "alias "+devName) {
		t.Errorf("the device left the pod: %s", show(e.pod, "eth0"))
	}
	e.node.Run(t, "ip", "link", "delete", devName)
	if _, err := e.run("DEL", conf, nil); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	e.returned(false)
}

// TestFailedAdd: every refusal leaves the device on the node as it was (up,
// no alias), the pod and IPAM untouched.
func TestFailedAdd(t *testing.T) {
	for _, tc := range []struct {
		name, keys string
		ranges     []string
		setup      func(e *env)
		code       uint
		want       string
	}{
		{name: "IPAM refuses after the move", keys: `"device":"` + devName + `"`, ranges: []string{"10.9.0.0/33"}, code: 7, want: "IPAM"},
		{name: "MTU too small for IPv6, after IPAM", keys: `"device":"` + devName + `"`, ranges: dual, code: 7, want: "below 1280",
			setup: func(e *env) { e.node.Run(e.t, "ip", "link", "set", devName, "mtu", "1000") }},
		{name: "interface name taken in the pod", keys: `"device":"` + devName + `"`, ranges: dual, code: 4, want: `already has an interface "eth0"`,
			setup: func(e *env) { e.pod.Run(e.t, "ip", "link", "add", "eth0", "type", "bridge") }},
		{name: "no such device", keys: `"device":"nope0"`, code: 7, want: `device "nope0" does not exist`},
		{name: "no such MAC", keys: `"hwaddr":"02:00:00:00:00:99"`, code: 7, want: "no link of the node's namespace has MAC"},
		{name: "a device that cannot move", keys: `"device":"lo"`, code: 7, want: "cannot leave the node's namespace"},
		{name: "nothing names the device", code: 7, want: `set "device"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			_, err := e.run("ADD", e.conf(tc.keys, tc.ranges...), nil)
			wantCode(t, err, tc.code)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if tc.code != 4 && show(e.pod, "eth0") != "" {
				t.Errorf("eth0 left in the pod")
			}
			if out := show(e.node, devName); !strings.Contains(out, ",UP") || strings.Contains(out, "alias") {
				t.Errorf("device not as it was: %s", out)
			}
			if n := e.reservations(); n != 0 {
				t.Errorf("%d reservations left", n)
			}
		})
	}
}

// TestCheckDetectsDrift: CHECK names a device that is not the lent one, a
// MAC that changed and an address gone.
func TestCheckDetectsDrift(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(`"device":"`+devName+`"`, dual[:1]...)
	res, err := e.run("ADD", conf, nil)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	for _, s := range []struct {
		name, conf, want string
		breakIt, fixIt   []string
	}{
		{name: "another device configured", conf: e.conf(`"device":"other0"`, dual[:1]...), want: `configuration names "other0"`},
		{name: "alias cleared", want: "no alias", breakIt: []string{"alias", ""}, fixIt: []string{"alias", devName}},
		{name: "MAC changed", want: "MAC", breakIt: []string{"address", "02:00:00:00:00:99"}, fixIt: []string{"address", devMAC}},
	} {
		c := conf
		if s.conf != "" {
			c = s.conf
		}
		if s.breakIt != nil {
			e.pod.Run(t, append([]string{"ip", "link", "set", "eth0"}, s.breakIt...)...)
		}
		if _, err := e.run("CHECK", c, res); err == nil || !strings.Contains(err.Error(), s.want) {
			t.Errorf("%s: CHECK = %v, want %q", s.name, err, s.want)
		}
		if s.fixIt != nil {
			e.pod.Run(t, append([]string{"ip", "link", "set", "eth0"}, s.fixIt...)...)
		}
	}
	e.pod.Run(t, "ip", "addr", "flush", "dev", "eth0")
	if _, err := e.run("CHECK", conf, res); err == nil || !strings.Contains(err.Error(), "10.9.0.2") {
		t.Errorf("address gone: CHECK = %v", err)
	}
}

// TestStatus: STATUS is ready before ADD and while the device is lent to a
// pod, when it is absent from the node: a failed STATUS would mark the
// runtime's network, and the node, not ready.
func TestStatus(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(`"device":"` + devName + `"`)
	if _, err := e.run("STATUS", conf, nil); err != nil {
		t.Fatalf("STATUS before ADD: %v", err)
	}
	if _, err := e.run("ADD", conf, nil); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if _, err := e.run("STATUS", conf, nil); err != nil {
		t.Errorf("STATUS while the device is lent: %v", err)
	}
}

// TestGC: IPAM's reservations of attachments not in the valid list go.
func TestGC(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(`"device":"`+devName+`"`, dual...)
	if _, err := e.run("ADD", conf, nil); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if _, err := e.run("GC", strings.TrimSuffix(conf, "}")+`,"cni.dev/valid-attachments":[]}`, nil); err != nil || e.reservations() != 0 {
		t.Errorf("GC = %v, %d reservations left", err, e.reservations())
	}
}
