package tap

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// attachment is one pod's tap: the plugin run inside a node namespace for
// container "c1"'s eth0, host-local's state in a temporary directory.
type attachment struct {
	node, pod *netnstest.NS
	a         cniplugin.Args
	dataDir   string
}

// attach prepares an attachment whose configuration has keys (JSON
// members) and, with ranges, host-local's ranges.
func attach(t *testing.T, keys string, ranges ...string) *attachment {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	at := &attachment{node: netnstest.New(t, "tap-node"), pod: netnstest.New(t, "tap-pod"), dataDir: t.TempDir()}
	conf := map[string]any{"cniVersion": "1.1.0", "name": "tapnet", "type": "tap"}
	if keys != "" {
		if err := json.Unmarshal([]byte("{"+keys+"}"), &conf); err != nil {
			t.Fatal(err)
		}
	}
	if len(ranges) > 0 {
		var rs [][]map[string]string
		for _, r := range ranges {
			rs = append(rs, []map[string]string{{"subnet": r}})
		}
		conf["ipam"] = map[string]any{"type": "host-local", "dataDir": at.dataDir, "ranges": rs}
	}
	b, _ := json.Marshal(conf)
	at.a = cniplugin.Args{ContainerID: "c1", Netns: at.pod.Path, IfName: "eth0", StdinData: b,
		Path: testutil.Plugins(t, "plugins/ipam/host-local")}
	return at
}

// verb runs fn, a verb of the plugin, in the node with the attachment's
// arguments; prev, when set, becomes the prevResult.
func (at *attachment) verb(t *testing.T, prev *current.Result, fn func(context.Context, *cniplugin.Args) error) error {
	t.Helper()
	a := at.a
	if prev != nil {
		p, _ := json.Marshal(prev)
		a.StdinData = []byte(strings.TrimSuffix(string(a.StdinData), "}") + `,"prevResult":` + string(p) + "}")
	}
	var err error
	at.node.Do(t, func() error { err = fn(context.Background(), &a); return nil })
	return err
}

func (at *attachment) add(t *testing.T) (*current.Result, error) {
	t.Helper()
	var res *current.Result
	err := at.verb(t, nil, func(ctx context.Context, a *cniplugin.Args) error {
		r, err := New().Add(ctx, a)
		if err == nil {
			res = r.(*current.Result)
		}
		return err
	})
	return res, err
}

// leases counts host-local's reservations.
func (at *attachment) leases() int {
	entries, _ := os.ReadDir(at.dataDir + "/tapnet")
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "10.") || strings.HasPrefix(e.Name(), "fd") {
			n++
		}
	}
	return n
}

// TestVisibleEffect: for each set of keys, the tap is in the pod with its
// flags, owner, group, MAC and MTU as `ip -d link` reads them over netlink,
// on the bridge when asked, up with IPAM's addresses; CHECK passes; DEL,
// twice, leaves no tap and no reservation.
func TestVisibleEffect(t *testing.T) {
	for _, tc := range []struct {
		name, keys string
		ranges     []string
		setup      string // a bridge to make in the pod first
		want       []string
	}{
		{"L2 defaults", "", nil, "", []string{"tun type tap pi off vnet_hdr off persist on", "MULTICAST,UP>"}},
		{"multiQueue, owner, group", `"multiQueue":true,"owner":4242,"group":4343`, nil, "", []string{"multi_queue", "user 4242 group 4343"}},
		{"mac and mtu", `"mac":"02:00:00:00:7a:01","mtu":9000`, nil, "", []string{"link/ether 02:00:00:00:7a:01", "mtu 9000"}},
		{"bridge", `"bridge":"br0"`, nil, "br0", []string{"master br0"}},
		{"dual-stack IPAM", "", []string{"10.8.0.0/24", "fd00:8::/64"}, "", []string{"state"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := attach(t, tc.keys, tc.ranges...)
			if tc.setup != "" {
				at.pod.Run(t, "ip", "link", "add", tc.setup, "type", "bridge")
			}
			res, err := at.add(t)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			out := at.pod.Run(t, "ip", "-d", "link", "show", "eth0")
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("want %q in:\n%s", w, out)
				}
			}
			addrs := at.pod.Run(t, "ip", "addr", "show", "eth0")
			for _, ip := range res.IPs {
				if !strings.Contains(addrs, ip.Address.String()) {
					t.Errorf("%s not on eth0:\n%s", ip.Address.String(), addrs)
				}
			}
			if len(res.IPs) != len(tc.ranges) || at.leases() != len(tc.ranges) || res.Interfaces[0].Sandbox != at.pod.Path {
				t.Errorf("result %+v with %d reservations", res, at.leases())
			}
			if err := at.verb(t, res, New().Check); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			for i := range 2 {
				if err := at.verb(t, nil, New().Del); err != nil {
					t.Fatalf("DEL %d: %v", i+1, err)
				}
			}
			if l := at.pod.Links(t, "type", "tun"); len(l) != 0 || at.leases() != 0 {
				t.Errorf("after DEL: taps %v, %d reservations", l, at.leases())
			}
		})
	}
}

// TestSelinuxContext: the tap takes the configured context, where SELinux
// is enabled; without SELinux the key is a configuration error.
func TestSelinuxContext(t *testing.T) {
	at := attach(t, `"selinuxContext":"system_u:system_r:container_t:s0"`)
	if _, err := os.Stat("/sys/fs/selinux/enforce"); err == nil {
		t.Skip("SELinux is enabled here; the labelled tap needs a policy allowing the context, which these tests do not install")
	}
	_, err := at.add(t)
	if got := cniplugin.ToCNIError(err); err == nil || got.Code != netconf.CodeInvalidConfig || !strings.Contains(err.Error(), "SELinux is not enabled") {
		t.Fatalf("ADD without SELinux = %v, want code 7", err)
	}
	if l := at.pod.Links(t, "type", "tun"); len(l) != 0 {
		t.Errorf("taps left: %v", l)
	}
}

// TestFailedAdd: a refusal before or after the tap was made leaves no tap
// and no reservation.
func TestFailedAdd(t *testing.T) {
	for _, tc := range []struct {
		name, keys string
		ranges     []string
		taken      bool
		code       uint
		want       string
	}{
		{"bridge missing, after the tap", `"bridge":"br9"`, []string{"10.8.0.0/24"}, false, 7, `bridge "br9" does not exist`},
		{"IPAM refuses", "", []string{"10.8.0.0/33"}, false, 7, "IPAM"},
		{"MTU too small for IPv6", `"mtu":1000`, []string{"fd00:8::/64"}, false, 7, "below 1280"},
		{"name taken by a tap", "", nil, true, 4, `already has an interface "eth0"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := attach(t, tc.keys, tc.ranges...)
			if tc.taken {
				at.pod.Run(t, "ip", "tuntap", "add", "mode", "tap", "name", "eth0")
			}
			_, err := at.add(t)
			if got := cniplugin.ToCNIError(err); err == nil || got.Code != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ADD = %v, want code %d saying %q", err, tc.code, tc.want)
			}
			if l := at.pod.Links(t, "type", "tun"); len(l) != map[bool]int{true: 1}[tc.taken] || at.leases() != 0 {
				t.Errorf("left: taps %v, %d reservations", l, at.leases())
			}
		})
	}
}

// TestDelAfterTheNetnsIsGone: DEL releases the addresses, twice over.
func TestDelAfterTheNetnsIsGone(t *testing.T) {
	at := attach(t, "", "10.8.0.0/24")
	if _, err := at.add(t); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	at.pod.Delete(t)
	for i := range 2 {
		if err := at.verb(t, nil, New().Del); err != nil || at.leases() != 0 {
			t.Fatalf("DEL %d: %v, %d reservations", i+1, err, at.leases())
		}
	}
}

// TestCheckDetectsDrift: CHECK compares the tap with the configuration.
func TestCheckDetectsDrift(t *testing.T) {
	at := attach(t, `"bridge":"br0"`)
	at.pod.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	res, err := at.add(t)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	for _, s := range []struct{ keys, want string }{
		{`"bridge":"br0","multiQueue":true`, "multi_queue false"},
		{`"bridge":"br0","owner":4242`, "owner 0"},
		{`"bridge":"br0","mtu":1400`, "MTU"},
		{`"bridge":"br1"`, `not a port of bridge "br1"`},
	} {
		at.a.StdinData = []byte(`{"cniVersion":"1.1.0","name":"tapnet","type":"tap",` + s.keys + `}`)
		if err := at.verb(t, res, New().Check); err == nil || !strings.Contains(err.Error(), s.want) {
			t.Errorf("%s: CHECK = %v, want %q", s.keys, err, s.want)
		}
	}
}

// TestLoadConf: malformed configurations and their codes.
func TestLoadConf(t *testing.T) {
	const base = `"cniVersion":"1.1.0","name":"n","type":"tap"`
	for _, tc := range []struct {
		name, conf, args string
		code             uint // 0: accepted
	}{
		{"defaults", `{` + base + `}`, "", 0},
		{"every key", `{` + base + `,"multiQueue":true,"mtu":1400,"mac":"02:00:00:00:00:01","owner":1,"group":2,"selinuxContext":"x","bridge":"br0"}`, "", 0},
		{"not JSON", `{` + base, "", netconf.CodeDecoding},
		{"owner negative", `{` + base + `,"owner":-1}`, "", netconf.CodeDecoding},
		{"owner (uid_t)-1", `{` + base + `,"owner":4294967295}`, "", netconf.CodeInvalidConfig},
		{"mtu too small", `{` + base + `,"mtu":20}`, "", netconf.CodeInvalidConfig},
		{"bridge not a name", `{` + base + `,"bridge":"a/b"}`, "", netconf.CodeInvalidConfig},
		{"mac not a MAC", `{` + base + `,"mac":"zz"}`, "", netconf.CodeInvalidConfig},
		{"CNI_ARGS MAC not a MAC", `{` + base + `}`, "MAC=zz", netconf.CodeInvalidEnv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConf([]byte(tc.conf), tc.args)
			if got := cniplugin.ToCNIError(err); (err == nil) != (tc.code == 0) || (err != nil && got.Code != tc.code) {
				t.Errorf("loadConf = %v, want code %d", err, tc.code)
			}
		})
	}
}

func FuzzLoadConf(f *testing.F) {
	f.Add(`{"cniVersion":"1.1.0","name":"n","type":"tap","mtu":1400,"owner":1,"bridge":"br0"}`, "MAC=02:00:00:00:00:01")
	f.Fuzz(func(t *testing.T, s, args string) {
		if c, err := loadConf([]byte(s), args); err == nil && (c.MTU < 0 || c.MTU > 65535) {
			t.Errorf("accepted MTU %d", c.MTU)
		}
	})
}
