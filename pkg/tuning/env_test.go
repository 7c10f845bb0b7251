package tuning

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// env is one test's pod: a namespace holding "eth0", one end of a veth
// whose other end "peer0" stays beside it, and tuning's data directory.
type env struct {
	t       *testing.T
	pod     *netnstest.NS
	p       *Plugin
	dataDir string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, pod: netnstest.New(t, "tun-pod"), dataDir: t.TempDir()}
	e.p = &Plugin{Allowlist: filepath.Join(t.TempDir(), "allowlist.conf")}
	e.pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	e.pod.Run(t, "ip", "link", "set", "eth0", "up")
	return e
}

// prevResult is what the interface plugin before tuning returned, in
// version 1.x form; prev03 the same for 0.3.x and 0.4.0.
func (e *env) prevResult(version string) map[string]any {
	ip := map[string]any{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}
	if version < "1.0.0" {
		ip["version"] = "4"
	}
	return map[string]any{
		"cniVersion": version,
		"interfaces": []map[string]any{{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": e.pod.Path}},
		"ips":        []map[string]any{ip},
	}
}

// conf renders a configuration of version 1.1.0 with a prevResult: the keys
// of over on top (a nil value removes the key).
func (e *env) conf(over map[string]any) string {
	return e.confVersion("1.1.0", over)
}

func (e *env) confVersion(version string, over map[string]any) string {
	c := map[string]any{"cniVersion": version, "name": "testnet", "type": "tuning", "dataDir": e.dataDir, "prevResult": e.prevResult(version)}
	maps.Copy(c, over)
	for k, v := range c {
		if v == nil {
			delete(c, k)
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func (e *env) args(cid, conf string) *cniplugin.Args {
	return &cniplugin.Args{ContainerID: cid, Netns: e.pod.Path, IfName: "eth0", StdinData: []byte(conf)}
}

func (e *env) add(a *cniplugin.Args) (*current.Result, error) {
	e.t.Helper()
	r, err := e.p.Add(e.t.Context(), a)
	if err != nil {
		return nil, err
	}
	return r.(*current.Result), nil
}

func (e *env) mustAdd(a *cniplugin.Args) *current.Result {
	e.t.Helper()
	res, err := e.add(a)
	if err != nil {
		e.t.Fatalf("ADD: %v", err)
	}
	return res
}

// check runs CHECK with ADD's result as the prevResult, as runtimes do.
func (e *env) check(a *cniplugin.Args, res *current.Result) error {
	e.t.Helper()
	var c map[string]any
	if err := json.Unmarshal(a.StdinData, &c); err != nil {
		e.t.Fatal(err)
	}
	prev, err := res.GetAsVersion(c["cniVersion"].(string)) // as the runtime cached it
	if err != nil {
		e.t.Fatal(err)
	}
	c["prevResult"] = prev
	b, err := json.Marshal(c)
	if err != nil {
		e.t.Fatal(err)
	}
	ca := *a
	ca.StdinData = b
	return e.p.Check(e.t.Context(), &ca)
}

func (e *env) del(a *cniplugin.Args) error {
	e.t.Helper()
	return e.p.Del(e.t.Context(), a)
}

// records lists the files of the data directory.
func (e *env) records() []string {
	e.t.Helper()
	entries, err := os.ReadDir(e.dataDir)
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		out = append(out, en.Name())
	}
	return out
}

// watched are the sysctls the tests set, by their path under /proc/sys.
var watched = []string{
	"net/ipv4/ip_forward",
	"net/core/somaxconn",
	"net/ipv4/tcp_rmem",
	"net/ipv4/conf/eth0/accept_redirects",
	"net/ipv6/conf/eth0/accept_ra",
	"net/ipv4/neigh/eth0/gc_stale_time",
	"net/ipv6/conf/eth0/mtu",
}

// state is what the pod shows of eth0 and the watched sysctls, read back in
// its namespace through netlink and /proc/sys.
type state struct {
	MAC               string
	MTU, TxQLen       int
	Promisc, Allmulti bool
	Sysctl            map[string]string
}

func (e *env) state() state {
	e.t.Helper()
	s := state{Sysctl: map[string]string{}}
	e.pod.Do(e.t, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		a := l.Attrs()
		s.MAC, s.MTU, s.TxQLen = a.HardwareAddr.String(), a.MTU, a.TxQLen
		s.Promisc, s.Allmulti = a.RawFlags&unix.IFF_PROMISC != 0, a.RawFlags&unix.IFF_ALLMULTI != 0
		for _, k := range watched {
			if s.Sysctl[k], err = link.ReadSysctl(k); err != nil {
				return err
			}
		}
		return nil
	})
	return s
}

// setMTU is what an MTU change shows: the interface's IPv6 mtu follows.
func (s *state) setMTU(mtu int) {
	s.MTU, s.Sysctl["net/ipv6/conf/eth0/mtu"] = mtu, strconv.Itoa(mtu)
}

func (s state) clone() state {
	s.Sysctl = maps.Clone(s.Sysctl)
	return s
}

func (s state) equal(o state) bool {
	return s.MAC == o.MAC && s.MTU == o.MTU && s.TxQLen == o.TxQLen && s.Promisc == o.Promisc &&
		s.Allmulti == o.Allmulti && maps.EqualFunc(s.Sysctl, o.Sysctl, sameValue)
}
