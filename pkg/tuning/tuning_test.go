package tuning

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestEveryKey runs ADD -> CHECK -> DEL -> DEL for each key and each way of
// giving it: after ADD the pod shows the value (read back through netlink
// and /proc/sys in its namespace), CHECK passes, and after DEL the pod is
// as before, with no record left.
func TestEveryKey(t *testing.T) {
	tests := []struct {
		name  string
		over  map[string]any
		env   string                 // CNI_ARGS
		setup []string               // a command run in the pod first
		want  func(s *state)         // the state after ADD, from the one before
		mac   string                 // the MAC the result must give eth0; "" for the prevResult's
		check func(*testing.T, *env) // extra check after ADD
	}{
		{name: "mac", over: map[string]any{"mac": "02:11:22:33:44:55"},
			want: func(s *state) { s.MAC = "02:11:22:33:44:55" }, mac: "02:11:22:33:44:55"},
		{name: "mac from CNI_ARGS", env: "IgnoreUnknown=1;K8S_POD_NAME=p;MAC=02:11:22:33:44:66",
			want: func(s *state) { s.MAC = "02:11:22:33:44:66" }, mac: "02:11:22:33:44:66"},
		{name: "mac from runtimeConfig", over: map[string]any{"capabilities": map[string]bool{"mac": true}, "runtimeConfig": map[string]any{"mac": "02:11:22:33:44:77"}},
			want: func(s *state) { s.MAC = "02:11:22:33:44:77" }, mac: "02:11:22:33:44:77"},
		{name: "mac from args.cni, upper case", over: map[string]any{"args": map[string]any{"cni": map[string]any{"mac": "02:11:22:33:44:AA"}}},
			want: func(s *state) { s.MAC = "02:11:22:33:44:aa" }, mac: "02:11:22:33:44:aa"},
		{name: "mtu", over: map[string]any{"mtu": 9000}, want: func(s *state) { s.setMTU(9000) }},
		{name: "mtu from args.cni", over: map[string]any{"mtu": 1400, "args": map[string]any{"cni": map[string]any{"mtu": 1300}}},
			want: func(s *state) { s.setMTU(1300) }},
		{name: "promisc", over: map[string]any{"promisc": true}, want: func(s *state) { s.Promisc = true }},
		{name: "promisc from args.cni", over: map[string]any{"args": map[string]any{"cni": map[string]any{"promisc": true}}},
			want: func(s *state) { s.Promisc = true }},
		{name: "allmulti on", over: map[string]any{"allmulti": true}, want: func(s *state) { s.Allmulti = true }},
		{name: "allmulti off", over: map[string]any{"allmulti": false}, setup: []string{"ip", "link", "set", "eth0", "allmulticast", "on"},
			want: func(s *state) { s.Allmulti = false }},
		{name: "allmulti from args.cni", over: map[string]any{"args": map[string]any{"cni": map[string]any{"allmulti": true}}},
			want: func(s *state) { s.Allmulti = true }},
		{name: "txQLen", over: map[string]any{"txQLen": 2000}, want: func(s *state) { s.TxQLen = 2000 }},
		{name: "txQLen 0", over: map[string]any{"txQLen": 0}, want: func(s *state) { s.TxQLen = 0 }},
		{name: "txQLen from args.cni", over: map[string]any{"args": map[string]any{"cni": map[string]any{"txQLen": 3000}}},
			want: func(s *state) { s.TxQLen = 3000 }},
		{name: "sysctls of the namespace and the interface", over: map[string]any{"sysctl": map[string]string{
			"net.ipv4.ip_forward":                   "1",
			"net.core.somaxconn":                    "1024",
			"net.ipv4.tcp_rmem":                     "4096 65536 1048576",
			"net.ipv4.conf.IFNAME.accept_redirects": "0",
			"net.ipv6.conf.eth0.accept_ra":          "0",
			"net.ipv4.neigh.IFNAME.gc_stale_time":   "30",
		}}, want: func(s *state) {
			set := map[string]string{"net/ipv4/ip_forward": "1", "net/core/somaxconn": "1024", "net/ipv4/tcp_rmem": "4096 65536 1048576",
				"net/ipv4/conf/eth0/accept_redirects": "0", "net/ipv6/conf/eth0/accept_ra": "0", "net/ipv4/neigh/eth0/gc_stale_time": "30"}
			for k, v := range set {
				s.Sysctl[k] = v
			}
		}},
		{name: "sysctl from args.cni over the top level", over: map[string]any{
			"sysctl": map[string]string{"net.ipv4.ip_forward": "1", "net.core.somaxconn": "1024"},
			"args":   map[string]any{"cni": map[string]any{"sysctl": map[string]string{"net.core.somaxconn": "2048"}}},
		}, want: func(s *state) { s.Sysctl["net/ipv4/ip_forward"], s.Sysctl["net/core/somaxconn"] = "1", "2048" }},
		{name: "a value already set changes nothing and saves nothing", over: map[string]any{"mtu": 1500, "sysctl": map[string]string{"net.ipv4.ip_forward": "0"}},
			want: func(*state) {}, check: func(t *testing.T, e *env) {
				if r := e.records(); len(r) != 0 {
					t.Errorf("ADD that changed nothing saved %v", r)
				}
			}},
		{name: "IPv6 mtu kept below a raised link MTU", over: map[string]any{"mtu": 9000, "sysctl": map[string]string{"net.ipv6.conf.IFNAME.mtu": "1500"}},
			want: func(s *state) { s.MTU = 9000 }}, // and IPv6 mtu 1500, as it was
		{name: "IPv6 mtu below a lowered link MTU, restored after the link", over: map[string]any{"mtu": 1400, "sysctl": map[string]string{"net.ipv6.conf.IFNAME.mtu": "1280"}},
			want: func(s *state) { s.setMTU(1400); s.Sysctl["net/ipv6/conf/eth0/mtu"] = "1280" }},
		{name: "custom dataDir", over: map[string]any{"mtu": 4000, "mac": "02:11:22:33:44:88", "promisc": true, "txQLen": 20000},
			want: func(s *state) { s.setMTU(4000); s.MAC, s.Promisc, s.TxQLen = "02:11:22:33:44:88", true, 20000 }, mac: "02:11:22:33:44:88",
			check: func(t *testing.T, e *env) {
				if r := e.records(); !slices.Equal(r, []string{"c1_eth0.json"}) {
					t.Errorf("records %v, want the reference's c1_eth0.json", r)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.setup != nil {
				e.pod.Run(t, tt.setup...)
			}
			before := e.state()
			want := before.clone()
			tt.want(&want)
			a := e.args("c1", e.conf(tt.over))
			a.Args = tt.env
			res := e.mustAdd(a)
			if got := e.state(); !got.equal(want) {
				t.Fatalf("after ADD the pod shows\n%+v\nwant\n%+v", got, want)
			}
			wantMAC := tt.mac
			if wantMAC == "" {
				wantMAC = "02:00:00:00:00:01"
			}
			if len(res.Interfaces) != 1 || res.Interfaces[0].Mac != wantMAC || len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.0.0.2/24" {
				t.Errorf("result %+v: want the prevResult with MAC %s", res, wantMAC)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
			if err := e.check(a, res); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			for range 2 {
				if err := e.del(a); err != nil {
					t.Fatalf("DEL: %v", err)
				}
				if got := e.state(); !got.equal(before) {
					t.Fatalf("after DEL the pod shows\n%+v\nwant as before ADD\n%+v", got, before)
				}
				if r := e.records(); len(r) != 0 {
					t.Fatalf("DEL left %v", r)
				}
			}
		})
	}
}

// TestVisibleInPod is the visible-effect test: one ADD sets every key, and
// the pod's namespace shows each value as read by ip(8) and sysctl files
// through `ip netns exec` (what a process of the pod sees); DEL puts each
// back.
func TestVisibleInPod(t *testing.T) {
	e := newEnv(t)
	before := e.pod.Run(t, "ip", "-d", "link", "show", "eth0")
	sysctls := func() string {
		return e.pod.Run(t, "sh", "-c", "cat /proc/sys/net/ipv4/conf/eth0/accept_redirects /proc/sys/net/core/somaxconn /proc/sys/net/ipv4/ip_forward")
	}
	beforeSysctls := sysctls()
	a := e.args("c1", e.conf(map[string]any{
		"mac": "02:42:ac:11:00:09", "mtu": 9000, "promisc": true, "allmulti": true, "txQLen": 4242,
		"sysctl": map[string]string{"net.ipv4.conf.IFNAME.accept_redirects": "0", "net.core.somaxconn": "777", "net.ipv4.ip_forward": "1"},
	}))
	e.mustAdd(a)
	shown := e.pod.Run(t, "ip", "-d", "link", "show", "eth0")
	for _, w := range []string{"link/ether 02:42:ac:11:00:09", "mtu 9000", "PROMISC", "ALLMULTI", "qlen 4242", "promiscuity 1", "allmulti 1"} {
		if !strings.Contains(shown, w) {
			t.Errorf("after ADD, ip link shows no %q:\n%s", w, shown)
		}
	}
	if got := sysctls(); got != "0\n777\n1\n" {
		t.Errorf("after ADD the pod reads sysctls %q, want 0, 777, 1", got)
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	if got := e.pod.Run(t, "ip", "-d", "link", "show", "eth0"); got != before {
		t.Errorf("after DEL ip link shows\n%s\nbefore ADD it showed\n%s", got, before)
	}
	if got := sysctls(); got != beforeSysctls {
		t.Errorf("after DEL the pod reads sysctls %q, before ADD %q", got, beforeSysctls)
	}
}

// TestSpecVersions: the result is the prevResult, in the configuration's
// version, with eth0's MAC changed; 0.3.1 and 0.4.0 keep their "version"
// per address, and each version's prevResult is read in its own format.
func TestSpecVersions(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			e := newEnv(t)
			a := e.args("c1", e.confVersion(v, map[string]any{"mac": "02:11:22:33:44:99", "mtu": 1400}))
			res := e.mustAdd(a)
			var out bytes.Buffer
			if err := cniplugin.PrintResult(&out, res, v); err != nil {
				t.Fatal(err)
			}
			var printed struct {
				CNIVersion string
				Interfaces []struct{ Name, Mac, Sandbox string }
				IPs        []map[string]any
			}
			if err := json.Unmarshal(out.Bytes(), &printed); err != nil {
				t.Fatal(err)
			}
			_, hasVersion := printed.IPs[0]["version"]
			if printed.CNIVersion != v || printed.Interfaces[0].Mac != "02:11:22:33:44:99" || printed.Interfaces[0].Sandbox != e.pod.Path ||
				printed.IPs[0]["address"] != "10.0.0.2/24" || hasVersion != (v < "1.0.0") {
				t.Errorf("printed result:\n%s", out.String())
			}
			if v != "0.3.1" { // CHECK came with 0.4.0
				if err := e.check(a, res); err != nil {
					t.Errorf("CHECK: %v", err)
				}
			}
			if err := e.del(a); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFailedAddLeavesNothing: an ADD refused before any change and one the
// kernel stops half-way both leave the pod as it was and no record.
func TestFailedAddLeavesNothing(t *testing.T) {
	tests := []struct {
		name string
		over map[string]any
		code uint
		want string
	}{
		{"MTU above the driver's maximum, after the MAC, promisc", map[string]any{"mac": "02:11:22:33:44:55", "promisc": true, "mtu": 70000, "sysctl": map[string]string{"net.ipv4.ip_forward": "1"}},
			7, "MTU"},
		{"sysctl value the kernel refuses, after the link and another sysctl", map[string]any{"mtu": 9000, "txQLen": 10,
			"sysctl": map[string]string{"net.ipv4.ip_forward": "1", "net.ipv4.conf.IFNAME.accept_redirects": "not-a-number"}}, 7, "accept_redirects"},
		{"IPv6 MTU above the link's new one", map[string]any{"mtu": 1400, "sysctl": map[string]string{"net.ipv6.conf.IFNAME.mtu": "1500"}}, 7, "ipv6/conf/eth0/mtu"},
		{"key kept for the whole node", map[string]any{"mtu": 9000, "sysctl": map[string]string{"net.ipv4.ip_forward": "1", "net.core.netdev_max_backlog": "10"}},
			7, "has no /proc/sys/net/core/netdev_max_backlog"},
		{"write-only key", map[string]any{"mtu": 9000, "sysctl": map[string]string{"net.ipv4.route.flush": "1"}}, 7, "write-only"},
		{"directory", map[string]any{"mtu": 9000, "sysctl": map[string]string{"net.ipv4.conf.IFNAME": "1"}}, 7, "directory"},
		{"sysctl of another interface", map[string]any{"mtu": 9000, "sysctl": map[string]string{"net.ipv6.conf.lo.disable_ipv6": "1"}}, 7, `names interface "lo"`},
		{"dataDir not writable", map[string]any{"mtu": 9000, "dataDir": "/dev/null/tuning"}, 5, "dataDir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			before := e.state()
			_, err := e.add(e.args("c1", e.conf(tt.over)))
			wantCode(t, err, tt.code, tt.want)
			if got := e.state(); !got.equal(before) {
				t.Errorf("failed ADD left the pod\n%+v\nbefore it was\n%+v", got, before)
			}
			if r := e.records(); len(r) != 0 {
				t.Errorf("failed ADD left records %v", r)
			}
		})
	}
}

func TestAddNeedsTheInterfaceAndTheNamespace(t *testing.T) {
	e := newEnv(t)
	a := e.args("c1", e.conf(map[string]any{"mtu": 9000}))
	a.IfName = "eth9"
	_, err := e.add(a)
	wantCode(t, err, netconf.CodeInvalidEnv, `no interface "eth9"`)
	a = e.args("c1", e.conf(map[string]any{"mtu": 9000}))
	a.Netns = "/run/netns/tun-does-not-exist"
	_, err = e.add(a)
	wantCode(t, err, netconf.CodeUnknownContainer, "does not exist")
	if r := e.records(); len(r) != 0 {
		t.Errorf("records %v", r)
	}
}

// TestDelWhenThingsAreGone: DEL succeeds, and removes the record, after
// the netns was deleted, without CNI_NETNS, after the interface was
// deleted, and with no record at all; each twice.
func TestDelWhenThingsAreGone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(e *env, a *cniplugin.Args)
	}{
		{"netns deleted", func(e *env, _ *cniplugin.Args) { e.pod.Delete(e.t) }},
		{"CNI_NETNS empty", func(_ *env, a *cniplugin.Args) { a.Netns = "" }},
		{"CNI_NETNS pointing nowhere", func(_ *env, a *cniplugin.Args) { a.Netns = "/run/netns/tun-does-not-exist" }},
		{"interface deleted", func(e *env, _ *cniplugin.Args) { e.pod.Run(e.t, "ip", "link", "delete", "eth0") }},
		{"record already gone", func(e *env, _ *cniplugin.Args) {
			if err := os.Remove(filepath.Join(e.dataDir, "c1_eth0.json")); err != nil {
				e.t.Fatal(err)
			}
		}},
		{"temporary files of saves killed midway", func(e *env, _ *cniplugin.Args) {
			for _, name := range []string{".c1_eth0.json.123", ".c1_eth0.json.456"} {
				if err := os.WriteFile(filepath.Join(e.dataDir, name), []byte(`{"mt`), 0o600); err != nil {
					e.t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.args("c1", e.conf(map[string]any{"mtu": 9000, "sysctl": map[string]string{"net.ipv4.ip_forward": "1", "net.ipv4.conf.IFNAME.accept_redirects": "0"}}))
			e.mustAdd(a)
			tc.after(e, a)
			// DEL gets no prevResult: it needs none.
			a.StdinData = []byte(e.conf(map[string]any{"prevResult": nil}))
			for range 2 {
				if err := e.del(a); err != nil {
					t.Fatalf("DEL: %v", err)
				}
			}
			if r := e.records(); len(r) != 0 {
				t.Errorf("DEL left %v", r)
			}
		})
	}
}

// TestDelRestoresAfterTheInterfaceIsGone: with eth0 deleted, DEL still
// restores the namespace's own sysctls.
func TestDelRestoresAfterTheInterfaceIsGone(t *testing.T) {
	e := newEnv(t)
	a := e.args("c1", e.conf(map[string]any{"mtu": 9000, "sysctl": map[string]string{"net.ipv4.conf.IFNAME.accept_redirects": "0", "net.core.somaxconn": "99"}}))
	e.mustAdd(a)
	e.pod.Run(t, "ip", "link", "delete", "eth0")
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	if got := e.pod.Run(t, "cat", "/proc/sys/net/core/somaxconn"); got != "4096\n" {
		t.Errorf("somaxconn %q after DEL, want 4096 back", got)
	}
}

// TestRecordCompatibility: the record is the reference's file: its name,
// and JSON that the reference's struct reads; a record the reference wrote
// (without our keys) is restored by our DEL.
func TestRecordCompatibility(t *testing.T) {
	e := newEnv(t)
	before := e.state()
	a := e.args("c1", e.conf(map[string]any{"mac": "02:11:22:33:44:55", "mtu": 9000, "promisc": true, "allmulti": true, "txQLen": 7,
		"sysctl": map[string]string{"net.ipv4.ip_forward": "1"}}))
	e.mustAdd(a)
	data, err := os.ReadFile(filepath.Join(e.dataDir, "c1_eth0.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The reference's configToRestore, as v1.9.1 declares it.
	var ref struct {
		Mac      string `json:"mac,omitempty"`
		Promisc  *bool  `json:"promisc,omitempty"`
		Mtu      int    `json:"mtu,omitempty"`
		Allmulti *bool  `json:"allmulti,omitempty"`
		TxQLen   *int   `json:"txQLen,omitempty"`
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	if ref.Mac != before.MAC || ref.Mtu != before.MTU || ref.Promisc == nil || *ref.Promisc || ref.Allmulti == nil || *ref.Allmulti ||
		ref.TxQLen == nil || *ref.TxQLen != before.TxQLen {
		t.Errorf("the reference would read %+v from\n%s", ref, data)
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}

	// As the reference writes it, after its ADD set MTU 9000 and promisc.
	e.pod.Run(t, "ip", "link", "set", "eth0", "mtu", "9000", "promisc", "on")
	refRecord := `{
 "promisc": false,
 "mtu": 1500
}`
	if err := os.WriteFile(filepath.Join(e.dataDir, "c1_eth0.json"), []byte(refRecord), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	if got := e.state(); !got.equal(before) {
		t.Errorf("DEL of the reference's record left\n%+v\nwant\n%+v", got, before)
	}
	if r := e.records(); len(r) != 0 {
		t.Errorf("records %v", r)
	}
}

// TestCheckDetectsDrift changes one thing at a time behind the plugin's
// back and expects CHECK to name it.
func TestCheckDetectsDrift(t *testing.T) {
	e := newEnv(t)
	a := e.args("c1", e.conf(map[string]any{"mac": "02:11:22:33:44:55", "mtu": 9000, "promisc": true, "allmulti": true, "txQLen": 77,
		"sysctl": map[string]string{"net.ipv4.conf.IFNAME.accept_redirects": "0", "net.ipv4.tcp_rmem": "4096 65536 1048576"}}))
	res := e.mustAdd(a)
	for _, s := range []struct {
		want           string
		breakIt, fixIt []string
	}{
		{"MAC is 02:11:22:33:44:66, the configuration says 02:11:22:33:44:55",
			[]string{"ip", "link", "set", "eth0", "address", "02:11:22:33:44:66"}, []string{"ip", "link", "set", "eth0", "address", "02:11:22:33:44:55"}},
		{"MTU is 1500", []string{"ip", "link", "set", "eth0", "mtu", "1500"}, []string{"ip", "link", "set", "eth0", "mtu", "9000"}},
		{"promisc is off", []string{"ip", "link", "set", "eth0", "promisc", "off"}, []string{"ip", "link", "set", "eth0", "promisc", "on"}},
		{"allmulti is off", []string{"ip", "link", "set", "eth0", "allmulticast", "off"}, []string{"ip", "link", "set", "eth0", "allmulticast", "on"}},
		{"txQLen is 1000, the configuration says 77", []string{"ip", "link", "set", "eth0", "txqueuelen", "1000"}, []string{"ip", "link", "set", "eth0", "txqueuelen", "77"}},
		{"sysctl net/ipv4/conf/eth0/accept_redirects is 1, the configuration says 0",
			[]string{"sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/accept_redirects"}, []string{"sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/eth0/accept_redirects"}},
		{"sysctl net/ipv4/tcp_rmem is 4096\t65536\t2097152",
			[]string{"sh", "-c", "echo 4096 65536 2097152 > /proc/sys/net/ipv4/tcp_rmem"}, []string{"sh", "-c", "echo 4096 65536 1048576 > /proc/sys/net/ipv4/tcp_rmem"}},
		{`no interface "eth0"`, []string{"ip", "link", "set", "eth0", "name", "eth1"}, []string{"ip", "link", "set", "eth1", "name", "eth0"}},
	} {
		e.pod.Run(t, s.breakIt...)
		err := e.check(a, res)
		if err == nil || !strings.Contains(err.Error(), s.want) {
			t.Errorf("CHECK after %v: %v, want %q", s.breakIt, err, s.want)
		}
		e.pod.Run(t, s.fixIt...)
		if err := e.check(a, res); err != nil {
			t.Fatalf("CHECK after %v: %v", s.fixIt, err)
		}
	}
	ca := *a
	ca.StdinData = []byte(e.conf(map[string]any{"prevResult": nil, "mtu": 9000}))
	wantCode(t, e.p.Check(t.Context(), &ca), netconf.CodeInvalidConfig, "prevResult")
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
}

// TestGC: GC removes this network's records of attachments not in the
// valid list, and keeps the valid ones, other networks' and the
// reference's (which name no network).
func TestGC(t *testing.T) {
	e := newEnv(t)
	other := netnstest.New(t, "tun-pod")
	other.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	conf := e.conf(map[string]any{"mtu": 9000})
	e.mustAdd(e.args("live", conf))
	gone := e.args("gone", conf)
	gone.Netns = other.Path
	e.mustAdd(gone)
	otherNet := e.args("othernet", e.conf(map[string]any{"name": "othernet", "mtu": 9000}))
	otherNet.Netns = other.Path
	otherNet.IfName = "peer0"
	e.mustAdd(otherNet)
	if err := os.WriteFile(filepath.Join(e.dataDir, "ref_eth0.json"), []byte(`{"mtu": 1500}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dataDir, "junk.json"), []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Temporary files of saves: a dead writer's (old) goes, whatever its
	// network; one being written stays.
	for _, name := range []string{".dead_eth0.json.123", ".writing_eth0.json.456"} {
		if err := os.WriteFile(filepath.Join(e.dataDir, name), []byte(`{"mt`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * regfile.StaleTemp)
	if err := os.Chtimes(filepath.Join(e.dataDir, ".dead_eth0.json.123"), old, old); err != nil {
		t.Fatal(err)
	}
	gc := e.conf(map[string]any{"prevResult": nil, "cni.dev/valid-attachments": []map[string]string{{"containerID": "live", "ifname": "eth0"}}})
	if err := e.p.GC(t.Context(), &cniplugin.Args{StdinData: []byte(gc)}); err != nil {
		t.Fatal(err)
	}
	if got, want := e.records(), []string{".writing_eth0.json.456", "junk.json", "live_eth0.json", "othernet_peer0.json", "ref_eth0.json"}; !slices.Equal(got, want) {
		t.Errorf("after GC: %v, want %v", got, want)
	}
	if err := e.p.GC(t.Context(), &cniplugin.Args{StdinData: []byte(e.conf(map[string]any{"dataDir": filepath.Join(e.dataDir, "none")}))}); err != nil {
		t.Errorf("GC without a data directory: %v", err)
	}
	if err := e.p.Status(t.Context(), &cniplugin.Args{StdinData: []byte(conf)}); err != nil {
		t.Errorf("STATUS: %v", err)
	}
}

// TestDelOfABadRecord: a record that is not JSON is removed by DEL, which
// restores nothing and succeeds; a directory at its name is left alone.
func TestDelOfABadRecord(t *testing.T) {
	e := newEnv(t)
	a := e.args("c1", e.conf(nil))
	path := filepath.Join(e.dataDir, "c1_eth0.json")
	for _, bad := range []string{`{"mtu":`, `{"sysctl":[{"key":"net/../kernel/hostname","value":"x"}]}`, `{"mac":"zz"}`} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := e.del(a); err != nil {
			t.Fatalf("DEL with record %s: %v", bad, err)
		}
		if r := e.records(); len(r) != 0 {
			t.Fatalf("record %s left: %v", bad, r)
		}
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := e.del(a); err != nil {
		t.Fatalf("DEL with a directory at the record's name: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the directory went: %v", err)
	}
}

// TestAllowlistOnAdd: with the node's allowlist in place, ADD refuses a key
// it does not allow before changing anything, and takes one it allows.
func TestAllowlistOnAdd(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(e.p.Allowlist, []byte(`^net\.ipv4\.conf\.IFNAME\.[a-z_]*$`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := e.state()
	_, err := e.add(e.args("c1", e.conf(map[string]any{"mtu": 9000, "sysctl": map[string]string{"net.ipv4.ip_forward": "1"}})))
	wantCode(t, err, netconf.CodeInvalidConfig, "not allowed on this node")
	if got := e.state(); !got.equal(before) {
		t.Errorf("refused ADD changed the pod: %+v", got)
	}
	a := e.args("c1", e.conf(map[string]any{"sysctl": map[string]string{"net.ipv4.conf.IFNAME.accept_redirects": "0"}}))
	e.mustAdd(a)
	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
}
