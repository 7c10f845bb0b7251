package bridge

import (
	"context"
	"encoding/json"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/cniplugin"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// env is one test's node: a namespace where the bridge, host veths and
// iptables rules live, plus the IPAM state directory.
type env struct {
	t       *testing.T
	node    *netnstest.NS
	p       cniplugin.Plugin
	dataDir string
	path    string
}

func TestMain(m *testing.M) { testutil.Main(m) }

func newEnv(t *testing.T) *env {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	return &env{t: t, node: netnstest.New(t, "br-node"), p: New(), dataDir: t.TempDir(), path: testutil.Plugins(t, "plugins/ipam/host-local")}
}

// conf builds a configuration: the defaults of these tests, with keys of
// over replacing them (a nil value deletes the key). ranges become the
// host-local ranges; none means L2 mode.
func (e *env) conf(over map[string]any, ranges ...string) string {
	c := map[string]any{"cniVersion": "1.1.0", "name": "testnet", "type": "bridge", "bridge": "cni0"}
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

// withPrev returns conf with res as its prevResult, as runtimes send CHECK.
func withPrev(t *testing.T, conf string, res *current.Result) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(conf), &m); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	m["prevResult"] = json.RawMessage(b)
	out, _ := json.Marshal(m)
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

func (e *env) check(a *cniplugin.Args) error {
	e.t.Helper()
	return e.in(func(ctx context.Context) error { return e.p.Check(ctx, a) })
}

func (e *env) del(a *cniplugin.Args) error {
	e.t.Helper()
	return e.in(func(ctx context.Context) error { return e.p.Del(ctx, a) })
}

// leftovers lists what an attachment may leave in the node: host veths,
// IPAM reservations, masquerade chains and rules and macspoofchk chains.
func (e *env) leftovers() []string {
	e.t.Helper()
	var left []string
	out := e.node.Run(e.t, "ip", "-o", "link", "show", "type", "veth")
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "cni0.") { // VLAN gateway interfaces are shared
			left = append(left, "veth: "+strings.TrimSpace(line))
		}
	}
	files, _ := filepath.Glob(filepath.Join(e.dataDir, "testnet", "*"))
	for _, f := range files {
		base := filepath.Base(f)
		if base != "lock" && !strings.HasPrefix(base, "last_reserved_ip") && !strings.HasPrefix(base, ".") {
			left = append(left, "reservation: "+base)
		}
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out := e.node.Run(e.t, save, "-t", "nat")
		for line := range strings.Lines(out) {
			if strings.Contains(line, "CNI-") {
				left = append(left, save+": "+strings.TrimSpace(line))
			}
		}
	}
	if out, err := e.node.Try("nft", "list", "table", "bridge", "nat"); err == nil && strings.Contains(out, "cni-br-iface") {
		left = append(left, "nft: "+out)
	}
	// The masquerade table and its fixed chains stay, as the reference leaves them.
	if out, err := e.node.Try("nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks"); err == nil {
		for line := range strings.Lines(out) {
			if strings.Contains(line, " masquerade ") {
				left = append(left, "nft masq_checks: "+strings.TrimSpace(line))
			}
		}
	}
	return left
}

func (e *env) assertClean() {
	e.t.Helper()
	if left := netnstest.Eventually(e.leftovers); len(left) > 0 {
		e.t.Fatalf("left behind:\n%s", strings.Join(left, "\n"))
	}
}
