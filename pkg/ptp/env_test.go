package ptp

import (
	"context"
	"encoding/json"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// node is one test's node: the namespace where the host veths, routes and
// masquerade rules live, and host-local's directory.
type node struct {
	t       *testing.T
	ns      *netnstest.NS
	dataDir string
	cniPath string
}

func newNode(t *testing.T) *node {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	return &node{t: t, ns: netnstest.New(t, "ptp-node"), dataDir: t.TempDir(), cniPath: testutil.Plugins(t, "plugins/ipam/host-local", "plugins/ipam/static")}
}

// conf is a ptp configuration over host-local with one range set per
// subnet, keys of over added (a nil value deletes one).
func (n *node) conf(over map[string]any, subnets ...string) string {
	var ranges [][]map[string]string
	for _, s := range subnets {
		ranges = append(ranges, []map[string]string{{"subnet": s}})
	}
	c := map[string]any{"cniVersion": "1.1.0", "name": "ptpnet", "type": "ptp",
		"ipam": map[string]any{"type": "host-local", "dataDir": n.dataDir, "ranges": ranges}}
	maps.Copy(c, over)
	maps.DeleteFunc(c, func(_ string, v any) bool { return v == nil })
	b, err := json.Marshal(c)
	if err != nil {
		n.t.Fatal(err)
	}
	return string(b)
}

// call is one invocation for pod (nil: no CNI_NETNS) as container cid.
func (n *node) call(pod *netnstest.NS, cid, conf string) *cniplugin.Args {
	a := &cniplugin.Args{ContainerID: cid, IfName: "eth0", Path: n.cniPath, StdinData: []byte(conf)}
	if pod != nil {
		a.Netns = pod.Path
	}
	return a
}

// run runs a verb of the plugin inside the node and returns its error.
func (n *node) run(verb func(context.Context, cniplugin.Plugin) error) error {
	var err error
	n.ns.Do(n.t, func() error { err = verb(context.Background(), New()); return nil })
	return err
}

func (n *node) add(a *cniplugin.Args) (res *current.Result, err error) {
	err = n.run(func(ctx context.Context, p cniplugin.Plugin) error {
		r, err := p.Add(ctx, a)
		res, _ = r.(*current.Result)
		return err
	})
	return res, err
}

// must ends the test when a verb failed.
func (n *node) must(err error, verb string) {
	n.t.Helper()
	if err != nil {
		n.t.Fatalf("%s: %v", verb, err)
	}
}

func (n *node) mustAdd(a *cniplugin.Args) *current.Result {
	n.t.Helper()
	res, err := n.add(a)
	n.must(err, "ADD "+a.ContainerID)
	return res
}

// check runs CHECK of a with res as its prevResult.
func (n *node) check(a *cniplugin.Args, res *current.Result) error {
	var conf map[string]any
	if err := json.Unmarshal(a.StdinData, &conf); err != nil {
		n.t.Fatal(err)
	}
	prev, err := res.GetAsVersion(conf["cniVersion"].(string))
	if err != nil {
		n.t.Fatal(err)
	}
	conf["prevResult"] = prev
	withPrev := *a
	withPrev.StdinData, _ = json.Marshal(conf)
	return n.run(func(ctx context.Context, p cniplugin.Plugin) error { return p.Check(ctx, &withPrev) })
}

func (n *node) del(a *cniplugin.Args) error {
	return n.run(func(ctx context.Context, p cniplugin.Plugin) error { return p.Del(ctx, a) })
}

// delTwice runs DEL twice, which must both succeed: DEL is idempotent.
func (n *node) delTwice(a *cniplugin.Args) {
	n.t.Helper()
	n.must(n.del(a), "DEL")
	n.must(n.del(a), "second DEL")
}

// addrFiles lists host-local's reservations of the test network.
func (n *node) addrFiles() []string {
	entries, _ := os.ReadDir(filepath.Join(n.dataDir, "ptpnet"))
	var ips []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// masqRules is every masquerade rule of the node, of both backends.
func (n *node) masqRules() string {
	var out strings.Builder
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		s, _ := n.ns.Try(save, "-t", "nat")
		for line := range strings.Lines(s) {
			if strings.Contains(line, "CNI-") {
				out.WriteString(line)
			}
		}
	}
	// The table and its skeleton stay, as the reference's: rules do not.
	s, _ := n.ns.Try("nft", "list", "chain", "inet", masq.NFTTable().Name, "masq_checks")
	for line := range strings.Lines(s) {
		if strings.Contains(line, "saddr") {
			out.WriteString(line)
		}
	}
	return out.String()
}

// assertClean fails when the node holds a veth, a masquerade rule or a
// reservation of the network.
func (n *node) assertClean() {
	n.t.Helper()
	if l := netnstest.Eventually(func() []string { return n.ns.Links(n.t, "type", "veth") }); len(l) > 0 {
		n.t.Errorf("veths left on the node: %v", l)
	}
	if r := n.masqRules(); r != "" {
		n.t.Errorf("masquerade rules left on the node:\n%s", r)
	}
	if f := n.addrFiles(); len(f) > 0 {
		n.t.Errorf("reservations left: %v", f)
	}
}

// contains fails the test, naming what, unless out holds every one of wants.
func contains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	missing := slices.DeleteFunc(slices.Clone(wants), func(w string) bool { return strings.Contains(out, w) })
	if len(missing) > 0 {
		t.Errorf("%s lacks %q:\n%s", what, missing, out)
	}
}

// ping wants an answer within 3 s, probing every 0.2 s meanwhile: the
// neighbour resolution of a fresh veth may lose the first.
func ping(t *testing.T, from *netnstest.NS, to string) {
	t.Helper()
	if out, err := from.Try("ping", "-c", "1", "-i", "0.2", "-w", "3", to); err != nil {
		t.Errorf("ping %s from %s: %v\n%s", to, from.Name, err, out)
	}
}

// gone says whether path does not exist.
func gone(path string) bool {
	_, err := os.Lstat(path)
	return os.IsNotExist(err)
}
