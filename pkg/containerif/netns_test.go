package containerif

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// fakeIPAM is an IPAM plugin that logs each verb to $LOG, and at DEL
// whether the container's interface is still there, after a pause in which
// a deletion run at the same time would have finished (dhcp needs it then,
// to send its DHCPRELEASE through it). Its DEL fails while $FAIL exists.
const fakeIPAM = `#!/bin/sh
seen=
if [ "$CNI_COMMAND" = DEL ]; then
	sleep 0.3
	if nsenter --net="$CNI_NETNS" ip link show "$CNI_IFNAME" >/dev/null 2>&1; then seen=" present"; else seen=" absent"; fi
	if [ -e "$FAIL" ]; then
		echo "DEL failed" >>"$LOG"
		echo '{"cniVersion":"1.1.0","code":11,"msg":"the server is away"}'
		exit 1
	fi
fi
echo "$CNI_COMMAND$seen" >>"$LOG"
echo '{"cniVersion":"1.1.0","ips":[{"address":"10.99.0.2/24"}]}'
`

// env is one test's node namespace, where the verbs run, and pod, which
// holds the container's end "eth0" of a veth pair (peer "peer0" up, so
// that the link gets its carrier).
type env struct {
	t         *testing.T
	node, pod *netnstest.NS
	path      string // CNI_PATH: fakeIPAM as "host-local" and as "dhcp"
	log, fail string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	e := &env{t: t, node: netnstest.New(t, "cif-node"), pod: netnstest.New(t, "cif-pod"), path: t.TempDir()}
	e.pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	e.pod.Run(t, "ip", "link", "set", "peer0", "up")
	for _, name := range []string{"host-local", "dhcp"} {
		if err := os.WriteFile(filepath.Join(e.path, name), []byte(fakeIPAM), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	e.log, e.fail = filepath.Join(dir, "ipam.log"), filepath.Join(dir, "fail")
	t.Setenv("LOG", e.log) // Delegate passes the environment on
	t.Setenv("FAIL", e.fail)
	return e
}

// args is an invocation for eth0 in the pod with IPAM of type ipamType.
func (e *env) args(ipamType string) *cniplugin.Args {
	conf := `{"cniVersion":"1.1.0","name":"n","type":"t","ipam":{"type":"` + ipamType + `"}}`
	return &cniplugin.Args{ContainerID: "c1", Netns: e.pod.Path, IfName: "eth0", Path: e.path, StdinData: []byte(conf)}
}

// in runs fn inside the node namespace.
func (e *env) in(fn func(ctx context.Context) error) error {
	var err error
	e.node.Do(e.t, func() error { err = fn(context.Background()); return nil })
	return err
}

// ipamLog is what the fake IPAM plugin logged so far.
func (e *env) ipamLog() string {
	b, _ := os.ReadFile(e.log)
	return string(b)
}

type conf struct{ netconf.Base }

func load(stdin []byte, _ string) (*conf, error) {
	c := &conf{}
	return c, netconf.Load(stdin, c)
}

func result(ips ...string) *current.Result {
	res := &current.Result{Interfaces: []*current.Interface{{Name: "eth0"}}}
	for _, s := range ips {
		addr, gw, _ := strings.Cut(s, " via ")
		ip, n, err := net.ParseCIDR(addr)
		if err != nil {
			panic(err)
		}
		n.IP = ip
		res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(0), Address: *n, Gateway: net.ParseIP(gw)})
	}
	return res
}

func route(dst, gw string) *types.Route {
	_, n, _ := net.ParseCIDR(dst)
	return &types.Route{Dst: *n, GW: net.ParseIP(gw)}
}

func contains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: want %q in:\n%s", what, w, out)
		}
	}
}

// TestConfigure applies results to a fresh veth and reads back the
// addresses, routes and sysctls. lo and eth0 start with IPv6 disabled, as a
// runtime may leave them: an IPv6 result enables it on both, as the
// reference does.
func TestConfigure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		res     *current.Result
		o       Options
		addrs   []string // in `ip addr show eth0`
		routes  []string // in `ip route; ip -6 route`
		sysctls []string // in `sysctl` of the keys below
	}{
		{name: "L2: only up", res: result(), addrs: []string{",UP"},
			sysctls: []string{"net.ipv4.conf.eth0.arp_notify = 0", "net.ipv6.conf.lo.disable_ipv6 = 1", "net.ipv6.conf.eth0.ndisc_notify = 0"}},
		{name: "IPv4", res: withRoutes(result("10.1.0.2/24 via 10.1.0.1"), route("0.0.0.0/0", ""), route("10.9.0.0/16", "10.1.0.254")),
			addrs:   []string{"inet 10.1.0.2/24", ",UP"},
			routes:  []string{"default via 10.1.0.1 dev eth0", "10.9.0.0/16 via 10.1.0.254 dev eth0"},
			sysctls: []string{"net.ipv4.conf.eth0.arp_notify = 1", "net.ipv6.conf.lo.disable_ipv6 = 1", "net.ipv6.conf.eth0.accept_dad = 0", "net.ipv6.conf.eth0.ndisc_notify = 0"}},
		{name: "dual-stack, ndisc_notify", res: withRoutes(result("10.1.0.2/24 via 10.1.0.1", "fd00:1::2/64 via fd00:1::1"), route("0.0.0.0/0", ""), route("::/0", "")),
			o:      Options{NDiscNotify: true},
			addrs:  []string{"inet 10.1.0.2/24", "inet6 fd00:1::2/64 scope global nodad"},
			routes: []string{"default via 10.1.0.1 dev eth0", "default via fd00:1::1 dev eth0"},
			sysctls: []string{"net.ipv6.conf.lo.disable_ipv6 = 0", "net.ipv6.conf.eth0.disable_ipv6 = 0", "net.ipv6.conf.eth0.keep_addr_on_down = 1",
				"net.ipv6.conf.eth0.accept_dad = 0", "net.ipv4.conf.eth0.arp_notify = 1", "net.ipv6.conf.eth0.ndisc_notify = 1"}},
		{name: "IPv6 with DAD", res: result("fd00:1::2/64"), o: Options{DAD: true},
			addrs:   []string{"inet6 fd00:1::2/64 scope global"},
			sysctls: []string{"net.ipv6.conf.eth0.accept_dad = 1", "net.ipv6.conf.eth0.enhanced_dad = 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.pod.Run(t, "sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=1", "net.ipv6.conf.eth0.disable_ipv6=1")
			e.pod.Do(t, func() error { return Configure("eth0", tc.res, tc.o) })
			addrs := e.pod.Run(t, "ip", "addr", "show", "eth0")
			contains(t, "eth0", addrs, tc.addrs...)
			if strings.Contains(addrs, "tentative") {
				t.Errorf("Configure returned before DAD settled:\n%s", addrs)
			}
			contains(t, "routes", e.pod.Run(t, "ip", "route")+e.pod.Run(t, "ip", "-6", "route"), tc.routes...)
			keys := []string{"net.ipv4.conf.eth0.arp_notify", "net.ipv6.conf.lo.disable_ipv6", "net.ipv6.conf.eth0.disable_ipv6",
				"net.ipv6.conf.eth0.keep_addr_on_down", "net.ipv6.conf.eth0.accept_dad", "net.ipv6.conf.eth0.enhanced_dad", "net.ipv6.conf.eth0.ndisc_notify"}
			contains(t, "sysctls", e.pod.Run(t, append([]string{"sysctl"}, keys...)...), tc.sysctls...)
		})
	}
}

func withRoutes(res *current.Result, routes ...*types.Route) *current.Result {
	res.Routes = routes
	return res
}

// TestConfigureRefusesIPv6BelowItsMTU: IPv6 on a link under 1280 bytes is a
// configuration error (code 7) before anything is set, not the kernel's
// "invalid argument".
func TestConfigureRefusesIPv6BelowItsMTU(t *testing.T) {
	e := newEnv(t)
	e.pod.Run(t, "ip", "link", "set", "eth0", "mtu", "1000")
	var err error
	e.pod.Do(t, func() error { err = Configure("eth0", result("10.1.0.2/24", "fd00:1::2/64"), Options{}); return nil })
	if code := cniplugin.ToCNIError(err).Code; code != netconf.CodeInvalidConfig || !strings.Contains(err.Error(), "below 1280") {
		t.Fatalf("Configure = %v (code %d), want code 7 naming the MTU", err, code)
	}
	if out := e.pod.Run(t, "ip", "addr", "show", "eth0"); strings.Contains(out, "inet") {
		t.Errorf("addresses added:\n%s", out)
	}
}

// TestConfigureUpError: a refusal to bring the link up goes through the
// plugin's UpError, and is wrapped as any other when UpError passes. Two
// macvlans of one master with one MAC may exist, but only one may be up.
func TestConfigureUpError(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"mv1", "mv2"} {
		e.pod.Run(t, "ip", "link", "add", "link", "peer0", "name", name, "address", "02:00:00:00:aa:99", "type", "macvlan")
	}
	e.pod.Run(t, "ip", "link", "set", "mv1", "up")
	errMine := errors.New("the plugin's own error")
	for _, tc := range []struct {
		name string
		up   func(netlink.Link, error) error
		want func(error) bool
	}{
		{"mapped", func(l netlink.Link, err error) error {
			if errors.Is(err, syscall.EADDRINUSE) {
				return errMine
			}
			return nil
		}, func(err error) bool { return errors.Is(err, errMine) }},
		{"passed", func(netlink.Link, error) error { return nil }, func(err error) bool {
			return errors.Is(err, syscall.EADDRINUSE) && strings.Contains(err.Error(), `setting "mv2" up`)
		}},
	} {
		var err error
		e.pod.Do(t, func() error { err = Configure("mv2", result(), Options{UpError: tc.up}); return nil })
		if !tc.want(err) {
			t.Errorf("%s: Configure = %v", tc.name, err)
		}
	}
}

// TestAddTakesBackOnFailure: when the plugin's link set-up fails, a
// host-local reservation made at the same time is released and the link
// the plugin created is deleted; an IPAM plugin that needs the interface
// (dhcp) is never run.
func TestAddTakesBackOnFailure(t *testing.T) {
	for _, tc := range []struct{ ipam, wantLog string }{
		{"host-local", "ADD\nDEL present\n"}, // undone in reverse: released, then deleted
		{"dhcp", ""},
	} {
		t.Run(tc.ipam, func(t *testing.T) {
			e := newEnv(t)
			e.pod.Run(t, "ip", "link", "delete", "eth0")
			errLinks := errors.New("links failed")
			part := func(ctx context.Context, t *Attach, c *conf) (*current.Result, error) {
				links := func() error {
					err := netns.DoFile(t.Netns, func() error {
						return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer1"})
					})
					if err != nil {
						return err
					}
					t.Created("veth")
					return errLinks
				}
				return t.IPAM(ctx, c.IPAM.Type, 0, links)
			}
			var res types.Result
			err := e.in(func(ctx context.Context) error {
				var err error
				res, err = New(Parts[*conf]{Load: load, Add: part}).Add(ctx, e.args(tc.ipam))
				return err
			})
			if !errors.Is(err, errLinks) || res != nil {
				t.Fatalf("Add = %v, %v; want the links' error and no result", res, err)
			}
			if got := e.ipamLog(); got != tc.wantLog {
				t.Errorf("IPAM log %q, want %q", got, tc.wantLog)
			}
			if l := e.pod.Links(t, "type", "veth"); len(l) != 0 {
				t.Errorf("the failed ADD left %v in the pod", l)
			}
		})
	}
}

// TestDelOrder: host-local is released while the link is deleted, an IPAM
// plugin that needs the interface (dhcp) before, and the plugin's other
// steps run in either case; DEL can be repeated, also without CNI_NETNS.
func TestDelOrder(t *testing.T) {
	for _, tc := range []struct{ ipam, wantLog string }{
		{"host-local", "DEL absent\n"},
		{"dhcp", "DEL present\n"},
	} {
		t.Run(tc.ipam, func(t *testing.T) {
			e := newEnv(t)
			a := e.args(tc.ipam)
			rules := 0
			part := func(ctx context.Context, a *cniplugin.Args, c *conf) Teardown {
				return Teardown{Also: []func() error{func() error { rules++; return nil }}}
			}
			if err := e.in(func(ctx context.Context) error { return New(Parts[*conf]{Load: load, Del: part}).Del(ctx, a) }); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if got := e.ipamLog(); got != tc.wantLog {
				t.Errorf("IPAM log %q, want %q", got, tc.wantLog)
			}
			if l := e.pod.Links(t, "type", "veth"); len(l) != 0 || rules != 1 {
				t.Errorf("after DEL: pod links %v, other steps run %d times", l, rules)
			}
			a.Netns = ""
			if err := e.in(func(ctx context.Context) error { return New(Parts[*conf]{Load: load}).Del(ctx, a) }); err != nil {
				t.Errorf("DEL again without CNI_NETNS: %v", err)
			}
		})
	}
}

// TestDelKeepsTheInterfaceWhenTheReleaseFails: dhcp failing to release
// leaves the interface for the runtime's retry, which then releases
// through it and deletes it.
func TestDelKeepsTheInterfaceWhenTheReleaseFails(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(e.fail, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a := e.args("dhcp")
	del := func(ctx context.Context) error { return New(Parts[*conf]{Load: load}).Del(ctx, a) }
	if err := e.in(del); err == nil || !strings.Contains(err.Error(), "the server is away") {
		t.Fatalf("DEL with the release failing = %v", err)
	}
	if l := e.pod.Links(t, "type", "veth"); !slices.Contains(l, "eth0") {
		t.Fatalf("after the failed release, pod links %v, want eth0 kept", l)
	}
	os.Remove(e.fail)
	if err := e.in(del); err != nil {
		t.Fatalf("DEL retried: %v", err)
	}
	if got, want := e.ipamLog(), "DEL failed\nDEL present\n"; got != want {
		t.Errorf("IPAM log %q, want %q", got, want)
	}
	if l := e.pod.Links(t, "type", "veth"); len(l) != 0 {
		t.Errorf("after the retried DEL, pod links %v", l)
	}
}

// TestCheck: CHECK needs the prevResult, runs IPAM's CHECK, finds the
// interface and compares it with the prevResult and the configuration.
func TestCheck(t *testing.T) {
	e := newEnv(t)
	e.pod.Run(t, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:01", "mtu", "1400")
	e.pod.Do(t, func() error { return Configure("eth0", result("10.1.0.2/24"), Options{}) })
	prev := `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"` + e.pod.Path + `"}],` +
		`"ips":[{"interface":0,"address":"10.1.0.2/24"}]}`
	a := e.args("host-local")
	a.StdinData = []byte(`{"cniVersion":"1.1.0","name":"n","type":"t","ipam":{"type":"host-local"},"prevResult":` + prev + `}`)
	isVeth := func(l netlink.Link) error {
		if l.Type() != "veth" {
			return errors.New("not a veth")
		}
		return nil
	}
	notMacvlan := func(netlink.Link) error { return errors.New("not a macvlan") }
	for _, tc := range []struct {
		name string
		want Want
		err  string // "" for none
	}{
		{"as ADD left it", Want{Kind: isVeth, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, MTU: 1400}, ""},
		{"another kind", Want{Kind: notMacvlan}, "not a macvlan"},
		{"configured MAC differs", Want{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}, "the configuration asks for 02:00:00:00:00:02"},
		{"configured MTU differs", Want{MTU: 1500}, "MTU 1400"},
	} {
		part := func(k *Checking, c *conf) error {
			return netns.Do(k.Args.Netns, func() error { _, err := k.Link(tc.want); return err })
		}
		err := e.in(func(ctx context.Context) error { return New(Parts[*conf]{Load: load, Check: part}).Check(ctx, a) })
		if (tc.err == "" && err != nil) || (tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err))) {
			t.Errorf("%s: CHECK = %v, want %q", tc.name, err, tc.err)
		}
	}
	if got := e.ipamLog(); got != strings.Repeat("CHECK\n", 4) {
		t.Errorf("IPAM log %q, want a CHECK per CHECK", got)
	}
	e.pod.Run(t, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:09")
	err := e.in(func(ctx context.Context) error {
		part := func(k *Checking, c *conf) error {
			return netns.Do(k.Args.Netns, func() error { _, err := k.Link(Want{}); return err })
		}
		return New(Parts[*conf]{Load: load, Check: part}).Check(ctx, a)
	})
	if err == nil || !strings.Contains(err.Error(), "the prevResult says 02:00:00:00:00:01") {
		t.Errorf("CHECK after the MAC changed = %v", err)
	}
	a.StdinData = []byte(`{"cniVersion":"1.1.0","name":"n","type":"t"}`)
	err = e.in(func(ctx context.Context) error { return New(Parts[*conf]{Load: load}).Check(ctx, a) })
	if code := cniplugin.ToCNIError(err).Code; code != netconf.CodeInvalidConfig {
		t.Errorf("CHECK without a prevResult = %v, want code 7", err)
	}
}

// TestDelUnlink: a plugin's own Unlink replaces the deletion of the link.
func TestDelUnlink(t *testing.T) {
	e := newEnv(t)
	unlinked := false
	part := func(ctx context.Context, a *cniplugin.Args, c *conf) Teardown {
		return Teardown{Unlink: func() error { unlinked = true; return nil }}
	}
	if err := e.in(func(ctx context.Context) error {
		return New(Parts[*conf]{Load: load, Del: part}).Del(ctx, e.args("dhcp"))
	}); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if l := e.pod.Links(t, "type", "veth"); !unlinked || !slices.Contains(l, "eth0") {
		t.Errorf("Unlink run: %v; pod links %v, want eth0 kept", unlinked, l)
	}
}
