package macvlan

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/cniplugin"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// env is one test's node: a namespace holding the master "mv0", a veth
// whose peer "mv0p" stands for the wire, plus the IPAM state directory.
type env struct {
	t       *testing.T
	node    *netnstest.NS
	p       cniplugin.Plugin
	dataDir string
	path    string
}

const master = "mv0"

func newEnv(t *testing.T) *env {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	e := &env{t: t, node: netnstest.New(t, "mv-node"), p: New(), dataDir: t.TempDir(), path: testutil.Plugins(t, "plugins/ipam/host-local")}
	e.node.Run(t, "ip", "link", "add", master, "type", "veth", "peer", "name", master+"p")
	e.node.Run(t, "ip", "link", "set", master, "up")
	e.node.Run(t, "ip", "link", "set", master+"p", "up")
	return e
}

// hairpinSwitch moves the wire's end into a namespace of its own where a
// bridge reflects frames back out of the port they came in on, as a switch
// in VEPA (802.1Qbg reflective relay) mode does.
func (e *env) hairpinSwitch() {
	sw := netnstest.New(e.t, "mv-switch")
	e.node.Run(e.t, "ip", "link", "set", master+"p", "netns", sw.Name)
	sw.Run(e.t, "ip", "link", "add", "sw0", "type", "bridge")
	sw.Run(e.t, "ip", "link", "set", master+"p", "master", "sw0")
	sw.Run(e.t, "ip", "link", "set", master+"p", "type", "bridge_slave", "hairpin", "on")
	sw.Run(e.t, "ip", "link", "set", master+"p", "up")
	sw.Run(e.t, "ip", "link", "set", "sw0", "up")
}

// conf builds a configuration: the defaults of these tests, with keys of
// over replacing them (a nil value deletes the key). ranges become the
// host-local range sets; none means L2 mode.
func (e *env) conf(over map[string]any, ranges ...string) string {
	c := map[string]any{"cniVersion": "1.1.0", "name": "testnet", "type": "macvlan", "master": master}
	if len(ranges) > 0 {
		var rs [][]map[string]string
		for _, r := range ranges {
			rs = append(rs, []map[string]string{{"subnet": r}})
		}
		c["ipam"] = map[string]any{"type": "host-local", "dataDir": e.dataDir, "ranges": rs}
	}
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

func (e *env) args(pod *netnstest.NS, cid, conf string) *cniplugin.Args {
	nsPath := ""
	if pod != nil {
		nsPath = pod.Path
	}
	return &cniplugin.Args{ContainerID: cid, Netns: nsPath, IfName: "eth0", Path: e.path, StdinData: []byte(conf)}
}

// withKey returns conf with key set to v (e.g. a prevResult or a GC list).
func withKey(t *testing.T, conf, key string, v any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(conf), &m); err != nil {
		t.Fatal(err)
	}
	m[key] = v
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// in runs a plugin verb inside the node namespace and returns its error.
func (e *env) in(fn func(ctx context.Context) error) error {
	e.t.Helper()
	var err error
	e.node.Do(e.t, func() error { err = fn(context.Background()); return nil })
	return err
}

func (e *env) add(a *cniplugin.Args) (*current.Result, error) {
	e.t.Helper()
	var res *current.Result
	err := e.in(func(ctx context.Context) error {
		r, err := e.p.Add(ctx, a)
		if err == nil {
			res = r.(*current.Result)
		}
		return err
	})
	return res, err
}

func (e *env) mustAdd(a *cniplugin.Args) *current.Result {
	e.t.Helper()
	res, err := e.add(a)
	if err != nil {
		e.t.Fatalf("ADD %s: %v", a.ContainerID, err)
	}
	return res
}

func (e *env) check(a *cniplugin.Args, res *current.Result) error {
	e.t.Helper()
	ca := *a
	ca.StdinData = []byte(withKey(e.t, string(a.StdinData), "prevResult", res))
	return e.in(func(ctx context.Context) error { return e.p.Check(ctx, &ca) })
}

func (e *env) del(a *cniplugin.Args) error {
	e.t.Helper()
	return e.in(func(ctx context.Context) error { return e.p.Del(ctx, a) })
}

func (e *env) status(conf string) error {
	e.t.Helper()
	return e.in(func(ctx context.Context) error { return e.p.Status(ctx, e.args(nil, "", conf)) })
}

// reservations lists host-local's address files of the test network.
func (e *env) reservations() []string {
	e.t.Helper()
	entries, _ := os.ReadDir(filepath.Join(e.dataDir, "testnet"))
	var out []string
	for _, f := range entries {
		if f.Name() != "lock" && !strings.HasPrefix(f.Name(), "last_reserved_ip") && !strings.HasPrefix(f.Name(), ".") {
			out = append(out, f.Name())
		}
	}
	return out
}

// links lists the names of a namespace's links other than lo.
func links(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	return slices.DeleteFunc(ns.Links(t), func(name string) bool { return name == "lo" })
}

// assertClean fails when pods hold links beyond those named in keep, or
// IPAM holds a reservation, or the node holds a macvlan.
func (e *env) assertClean(pods []*netnstest.NS, keep ...string) {
	e.t.Helper()
	for _, pod := range pods {
		for _, l := range links(e.t, pod) {
			if !slices.Contains(keep, l) {
				e.t.Errorf("pod %s still holds %q", pod.Name, l)
			}
		}
	}
	if r := e.reservations(); len(r) != 0 {
		e.t.Errorf("reservations left: %v", r)
	}
	if links := e.node.Links(e.t, "type", "macvlan"); len(links) > 0 {
		e.t.Errorf("macvlan left on the node: %v", links)
	}
}

// wantCode fails unless err maps to the CNI code.
func wantCode(t *testing.T, err error, code uint) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want code %d", code)
	}
	if got := cniplugin.ToCNIError(err).Code; got != code {
		t.Fatalf("error %v has code %d, want %d", err, got, code)
	}
}

func contains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: want %q in:\n%s", what, w, out)
		}
	}
}

// ping retries briefly: neighbour resolution of a fresh link takes a moment.
func ping(t *testing.T, from *netnstest.NS, to string) {
	t.Helper()
	var out string
	var err error
	for range 5 {
		if out, err = from.Try("ping", "-c", "1", "-W", "1", to); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("ping %s from %s: %v\n%s", to, from.Name, err, out)
}

// unreachable fails when from can ping to; two probes, a second each.
func unreachable(t *testing.T, from *netnstest.NS, to string) {
	t.Helper()
	if out, err := from.Try("ping", "-c", "2", "-i", "0.2", "-W", "1", to); err == nil {
		t.Errorf("ping %s from %s succeeded, want no reply:\n%s", to, from.Name, out)
	}
}
