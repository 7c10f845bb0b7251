package hostdevice

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/cniplugin"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// The node's device: one end of a veth whose other end (devName+"p") stays
// on the node for the wire. Its name sorts before "lo", so that it is the
// first entry of /sys/devices/virtual/net, which kernelpath reads.
const (
	devName = "hd0"
	devMAC  = "02:00:00:00:0d:01"
)

// env is one test: a node holding the device, up, and a pod.
type env struct {
	t         *testing.T
	node, pod *netnstest.NS
	p         cniplugin.Plugin
	dataDir   string
	path      string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	e := &env{t: t, node: netnstest.New(t, "hd-node"), pod: netnstest.New(t, "hd-pod"), p: New(),
		dataDir: t.TempDir(), path: testutil.Plugins(t, "plugins/ipam/host-local")}
	e.node.Run(t, "ip", "link", "add", devName, "address", devMAC, "type", "veth", "peer", "name", devName+"p")
	e.node.Run(t, "ip", "link", "set", devName, "up")
	e.node.Run(t, "ip", "link", "set", devName+"p", "up")
	return e
}

// conf is a configuration with the keys given as JSON members, e.g.
// `"device":"hd0"`; ranges add host-local's.
func (e *env) conf(keys string, ranges ...string) string {
	c := `{"cniVersion":"1.1.0","name":"hdnet","type":"host-device"`
	if keys != "" {
		c += "," + keys
	}
	if len(ranges) > 0 {
		c += `,"ipam":{"type":"host-local","dataDir":"` + e.dataDir + `","ranges":[[{"subnet":"` + strings.Join(ranges, `"}],[{"subnet":"`) + `"}]]}`
	}
	return c + "}"
}

// run runs one verb with conf as container "c1"'s eth0 inside the node;
// prev, when set, is the prevResult (CHECK). ADD returns its result.
func (e *env) run(verb, conf string, prev *current.Result) (*current.Result, error) {
	e.t.Helper()
	if prev != nil {
		b, err := json.Marshal(prev)
		if err != nil {
			e.t.Fatal(err)
		}
		conf = strings.TrimSuffix(conf, "}") + `,"prevResult":` + string(b) + "}"
	}
	a := &cniplugin.Args{Command: verb, ContainerID: "c1", Netns: e.pod.Path, IfName: "eth0", Path: e.path, StdinData: []byte(conf)}
	var res types.Result
	var err error
	e.node.Do(e.t, func() error {
		ctx := context.Background()
		switch verb {
		case "ADD":
			res, err = e.p.Add(ctx, a)
		case "CHECK":
			err = e.p.Check(ctx, a)
		case "DEL":
			err = e.p.Del(ctx, a)
		case "GC":
			err = e.p.GC(ctx, a)
		case "STATUS":
			err = e.p.Status(ctx, a)
		}
		return nil
	})
	if res == nil {
		return nil, err
	}
	return res.(*current.Result), err
}

// reservations counts host-local's address files.
func (e *env) reservations() int {
	entries, _ := os.ReadDir(filepath.Join(e.dataDir, "hdnet"))
	n := 0
	for _, f := range entries {
		if strings.Count(f.Name(), ".") == 3 || strings.Contains(f.Name(), ":") {
			n++
		}
	}
	return n
}

// show is `ip -d -o link show name` in ns, "" when there is no such link.
func show(ns *netnstest.NS, name string) string {
	out, err := ns.Try("ip", "-d", "-o", "link", "show", "dev", name)
	if err != nil {
		return ""
	}
	return out
}
