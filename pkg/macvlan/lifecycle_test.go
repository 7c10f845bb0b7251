package macvlan

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestPassthruTakesTheOnlySlot: a passthru macvlan holds the master alone;
// a second ADD in any mode fails with code 11 and leaves neither link nor
// reservation, and succeeds once the first attachment is gone.
func TestPassthruTakesTheOnlySlot(t *testing.T) {
	e := newEnv(t)
	pass := e.conf(map[string]any{"mode": "passthru"}, v4...)
	first, second := netnstest.New(t, "mv-pod"), netnstest.New(t, "mv-pod")
	e.mustAdd(e.args(first, "c1", pass))
	for _, conf := range []string{pass, e.conf(nil, v4...)} {
		_, err := e.add(e.args(second, "c2", conf))
		wantCode(t, err, netconf.CodeTryAgainLater)
		if !errors.Is(err, link.ErrPassthruBusy) || !strings.Contains(err.Error(), "passthru") {
			t.Errorf("error does not explain the occupied slot: %v", err)
		}
		if l := links(t, second); len(l) != 0 {
			t.Errorf("failed ADD left %v in the pod", l)
		}
		if r := e.reservations(); len(r) != 1 {
			t.Errorf("reservations %v, want only the first pod's", r)
		}
	}
	if err := e.del(e.args(first, "c1", pass)); err != nil {
		t.Fatal(err)
	}
	res := e.mustAdd(e.args(second, "c2", pass))
	if err := e.check(e.args(second, "c2", pass), res); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := e.del(e.args(second, "c2", pass)); err != nil {
		t.Fatal(err)
	}
	e.assertClean([]*netnstest.NS{first, second})
}

// TestFailedAddLeavesNothing: every way an ADD can fail, before IPAM or
// after it, leaves no link in the pod and no reservation.
func TestFailedAddLeavesNothing(t *testing.T) {
	cases := []struct {
		name   string
		over   map[string]any
		ranges []string
		setup  func(t *testing.T, e *env, pod *netnstest.NS) []string
		code   uint
		want   string
	}{
		{name: "MTU too small for IPv6, after IPAM", over: map[string]any{"mtu": 1000}, ranges: dual, code: 7, want: "below 1280"},
		{name: "IPAM refuses its configuration", ranges: []string{"10.1.0.0/33"}, code: 7, want: "IPAM plugin"},
		{name: "IPAM plugin missing", over: map[string]any{"ipam": map[string]any{"type": "no-such-ipam"}}, code: 7, want: "not found in CNI_PATH"},
		{name: "MTU above the master's", over: map[string]any{"mtu": 9000}, ranges: v4, code: 7, want: "larger than the MTU 1500"},
		{name: "master missing", over: map[string]any{"master": "nope0"}, ranges: v4, code: 7, want: `master "nope0" does not exist`},
		{name: "master not Ethernet", over: map[string]any{"master": "lo"}, ranges: v4, code: 7, want: "not an Ethernet device"},
		{name: "no default route to take a master from", over: map[string]any{"master": nil}, ranges: v4, code: 7, want: "no default route"},
		{name: "master is a bridge port", ranges: v4, code: 7, want: "bridge port",
			setup: func(t *testing.T, e *env, pod *netnstest.NS) []string {
				e.node.Run(t, "ip", "link", "add", "brx", "type", "bridge")
				e.node.Run(t, "ip", "link", "set", master, "master", "brx")
				return nil
			}},
		{name: "MAC taken by another pod, after IPAM", over: map[string]any{"mac": "02:00:00:00:aa:99"}, ranges: v4, code: 7, want: "already used by another macvlan",
			setup: func(t *testing.T, e *env, pod *netnstest.NS) []string {
				other := netnstest.New(t, "mv-pod")
				e.node.Run(t, "ip", "link", "add", "link", master, "name", "eth9", "netns", other.Name, "address", "02:00:00:00:aa:99", "type", "macvlan", "mode", "bridge")
				other.Run(t, "ip", "link", "set", "eth9", "up")
				return nil
			}},
		{name: "interface name taken", ranges: v4, code: 4, want: `already has an interface "eth0"`,
			setup: func(t *testing.T, e *env, pod *netnstest.NS) []string {
				pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0")
				return []string{"eth0", "x0"}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pod := netnstest.New(t, "mv-pod")
			var keep []string
			if tc.setup != nil {
				keep = tc.setup(t, e, pod)
			}
			_, err := e.add(e.args(pod, "c1", e.conf(tc.over, tc.ranges...)))
			wantCode(t, err, tc.code)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			e.assertClean([]*netnstest.NS{pod}, keep...)
		})
	}
}

func TestAddToMissingNetns(t *testing.T) {
	e := newEnv(t)
	a := e.args(nil, "c1", e.conf(nil, v4...))
	a.Netns = "/run/netns/mv-does-not-exist"
	_, err := e.add(a)
	wantCode(t, err, netconf.CodeUnknownContainer)
	if r := e.reservations(); len(r) != 0 {
		t.Errorf("reservations %v", r)
	}
}

// TestDelWithoutNetnsOrMaster: DEL releases the address when the pod's
// namespace is gone, when the master is gone, and without CNI_NETNS, and
// can be repeated.
func TestDelWithoutNetnsOrMaster(t *testing.T) {
	for _, tc := range []struct {
		name string
		// after undoes part of the attachment behind the plugin's back and
		// says whether DEL gets no CNI_NETNS.
		after func(t *testing.T, e *env, pod *netnstest.NS) (noNetns bool)
	}{
		{"netns deleted", func(t *testing.T, e *env, pod *netnstest.NS) bool {
			e.node.Run(t, "ip", "netns", "delete", pod.Name)
			return false
		}},
		{"master deleted", func(t *testing.T, e *env, pod *netnstest.NS) bool {
			e.node.Run(t, "ip", "link", "delete", master)
			return false
		}},
		{"no CNI_NETNS", func(t *testing.T, e *env, pod *netnstest.NS) bool {
			pod.Run(t, "ip", "link", "delete", "eth0")
			return true
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pod := netnstest.New(t, "mv-pod")
			conf := e.conf(nil, dual...)
			e.mustAdd(e.args(pod, "c1", conf))
			a := e.args(pod, "c1", conf)
			if tc.after(t, e, pod) {
				a.Netns = ""
			}
			for range 2 {
				if err := e.del(a); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			if r := e.reservations(); len(r) != 0 {
				t.Errorf("reservations left: %v", r)
			}
		})
	}
}

// TestCheckDetectsDrift breaks the attachment or changes the configuration
// one way at a time and expects CHECK to name what differs.
func TestCheckDetectsDrift(t *testing.T) {
	e := newEnv(t)
	e.node.Run(t, "ip", "link", "add", "mv1", "type", "veth", "peer", "name", "mv1p")
	pod := netnstest.New(t, "mv-pod")
	conf := withIPAMKey(t, e.conf(nil, v4...), "routes", []map[string]string{{"dst": "0.0.0.0/0"}})
	a := e.args(pod, "c1", conf)
	res := e.mustAdd(a)
	steps := []struct {
		name, want string
		over       map[string]any // a changed configuration for CHECK
		breakIt    func()
		fixIt      func()
	}{
		{name: "address removed", want: "10.1.0.2/24",
			breakIt: func() { pod.Run(t, "ip", "addr", "del", "10.1.0.2/24", "dev", "eth0") },
			fixIt: func() {
				pod.Run(t, "ip", "addr", "add", "10.1.0.2/24", "dev", "eth0")
				pod.Run(t, "ip", "route", "replace", "default", "via", "10.1.0.1")
			}},
		{name: "default route removed", want: "0.0.0.0/0",
			breakIt: func() { pod.Run(t, "ip", "route", "del", "default") },
			fixIt:   func() { pod.Run(t, "ip", "route", "add", "default", "via", "10.1.0.1") }},
		{name: "MAC changed", want: "MAC",
			breakIt: func() { pod.Run(t, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:99") },
			fixIt:   func() { pod.Run(t, "ip", "link", "set", "eth0", "address", res.Interfaces[0].Mac) }},
		{name: "mode differs", want: "private", over: map[string]any{"mode": "private"}},
		{name: "master differs", want: "not on the master", over: map[string]any{"master": "mv1"}},
		{name: "MTU differs", want: "MTU", over: map[string]any{"mtu": 1400}},
		{name: "master gone", want: `master "mv9" does not exist`, over: map[string]any{"master": "mv9"}},
	}
	for _, s := range steps {
		ca := *a
		if s.over != nil {
			ca.StdinData = []byte(withIPAMKey(t, e.conf(s.over, v4...), "routes", []map[string]string{{"dst": "0.0.0.0/0"}}))
		}
		if s.breakIt != nil {
			s.breakIt()
		}
		if err := e.check(&ca, res); err == nil || !strings.Contains(err.Error(), s.want) {
			t.Errorf("%s: CHECK = %v, want an error mentioning %q", s.name, err, s.want)
		}
		if s.fixIt != nil {
			s.fixIt()
		}
		if err := e.check(a, res); err != nil {
			t.Fatalf("after %s: CHECK = %v", s.name, err)
		}
	}
	// A veth in place of the macvlan.
	pod.Run(t, "ip", "link", "delete", "eth0")
	pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x0")
	if err := e.check(a, res); err == nil || !strings.Contains(err.Error(), "not a macvlan") {
		t.Errorf("veth in place: CHECK = %v", err)
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	if err := e.check(a, res); err == nil {
		t.Error("CHECK passed after DEL")
	}
	e.assertClean([]*netnstest.NS{pod}, "x0")
}

// TestCheckTellsNamespacesApart: the pod owns a link whose ifindex is the
// node master's; a CHECK that looks for the master in the pod must still
// see that the macvlan hangs off the node's link.
func TestCheckTellsNamespacesApart(t *testing.T) {
	e := newEnv(t)
	pod := netnstest.New(t, "mv-pod")
	podMaster(t, e, pod)
	if got, want := ifindex(t, pod, "pm0"), ifindex(t, e.node, master); got != want {
		t.Fatalf("fixture: pm0 has ifindex %s in the pod, %s has %s in the node; they must match", got, master, want)
	}
	pod.Run(t, "ip", "link", "set", "pm0", "name", master) // same name and ifindex as the node's master
	conf := e.conf(nil, v4...)
	a := e.args(pod, "c1", conf)
	res := e.mustAdd(a)
	if err := e.check(a, res); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	inPod := *a
	inPod.StdinData = []byte(e.conf(map[string]any{"linkInContainer": true}, v4...))
	if err := e.check(&inPod, res); err == nil || !strings.Contains(err.Error(), "namespace id") {
		t.Errorf("CHECK with the master looked up in the pod = %v, want a namespace mismatch", err)
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	e.assertClean([]*netnstest.NS{pod}, master, "pm0p")
}

// TestGC: GC releases the addresses of attachments not in the valid list
// and keeps the others.
func TestGC(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(nil, v4...)
	ids := []string{"keep", "stale1", "stale2"}
	for _, id := range ids {
		e.mustAdd(e.args(netnstest.New(t, "mv-pod"), id, conf))
	}
	valid := []map[string]string{{"containerID": "keep", "ifname": "eth0"}}
	gc := e.args(nil, "", withKey(t, conf, "cni.dev/valid-attachments", valid))
	if err := e.in(func(ctx context.Context) error { return e.p.GC(ctx, gc) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	r := e.reservations()
	if len(r) != 1 {
		t.Fatalf("after GC, reservations %v, want only keep's", r)
	}
	owner, err := os.ReadFile(filepath.Join(e.dataDir, "testnet", r[0]))
	if err != nil || !strings.HasPrefix(string(owner), "keep") {
		t.Errorf("kept reservation %s belongs to %q (%v)", r[0], owner, err)
	}
	// L2 mode has nothing to collect.
	if err := e.in(func(ctx context.Context) error { return e.p.GC(ctx, e.args(nil, "", e.conf(nil))) }); err != nil {
		t.Errorf("GC without IPAM: %v", err)
	}
}

// TestStatus: ready while the master can be found, code 50 when it cannot.
func TestStatus(t *testing.T) {
	e := newEnv(t)
	ok := []string{
		e.conf(nil), e.conf(nil, v4...),
		e.conf(map[string]any{"linkInContainer": true, "master": "only-in-pods"}), // cannot be checked without a pod
	}
	for _, conf := range ok {
		if err := e.status(conf); err != nil {
			t.Errorf("STATUS %s: %v", conf, err)
		}
	}
	noDefault := e.conf(map[string]any{"master": nil})
	for _, conf := range []string{e.conf(map[string]any{"master": "nope0"}), noDefault} {
		err := e.status(conf)
		wantCode(t, err, netconf.CodeUnavailable)
	}
	defaultVia(t, e.node, master)
	if err := e.status(noDefault); err != nil {
		t.Errorf("STATUS with a default route: %v", err)
	}
	err := e.status(e.conf(map[string]any{"mode": "source"}))
	wantCode(t, err, netconf.CodeInvalidConfig)
}

// TestDNSFromIPAM: without dns in the configuration the result carries
// IPAM's (the reference drops it).
func TestDNSFromIPAM(t *testing.T) {
	e := newEnv(t)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.1.0.53\nsearch pods.local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := netnstest.New(t, "mv-pod")
	a := e.args(pod, "c1", withIPAMKey(t, e.conf(nil, v4...), "resolvConf", resolv))
	res := e.mustAdd(a)
	if !slices.Equal(res.DNS.Nameservers, []string{"10.1.0.53"}) || !slices.Equal(res.DNS.Search, []string{"pods.local"}) {
		t.Errorf("result DNS %+v, want IPAM's", res.DNS)
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
}
