package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/internal/testutil"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// chain is a node namespace whose runtime runs the built binaries bridge
// (with host-local) and tuning, for one pod namespace.
type chain struct {
	t         *testing.T
	node, pod *netnstest.NS
	bin, dir  string
}

func newChain(t *testing.T) *chain {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	return &chain{t: t, node: netnstest.New(t, "tun-node"), pod: netnstest.New(t, "tun-pod"), dir: t.TempDir(),
		bin: testutil.Plugins(t, "plugins/main/bridge", "plugins/ipam/host-local", "plugins/meta/tuning")}
}

// call runs a plugin binary inside the node as a runtime does: the
// configuration on stdin, the attachment in CNI_*; it returns stdout and
// whether the plugin exited 0; stderr follows stdout when it did not.
func (c *chain) call(plugin, cmd string, conf map[string]any) (string, bool) {
	stdin, err := json.Marshal(conf)
	if err != nil {
		c.t.Fatal(err)
	}
	x := exec.Command("ip", "netns", "exec", c.node.Name, filepath.Join(c.bin, plugin))
	x.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + cmd, "CNI_CONTAINERID=c1",
		"CNI_NETNS=" + c.pod.Path, "CNI_IFNAME=eth0", "CNI_PATH=" + c.bin, "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=p"}
	x.Stdin = bytes.NewReader(stdin)
	var out, stderr bytes.Buffer
	x.Stdout, x.Stderr = &out, &stderr
	err = x.Run()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		c.t.Fatal(err)
	}
	if err != nil {
		return out.String() + stderr.String(), false
	}
	return out.String(), true
}

func (c *chain) mustCall(plugin, cmd string, conf map[string]any) string {
	c.t.Helper()
	out, ok := c.call(plugin, cmd, conf)
	if !ok {
		c.t.Fatalf("%s %s failed: %s", plugin, cmd, out)
	}
	return out
}

func (c *chain) bridgeConf() map[string]any {
	return map[string]any{"cniVersion": "1.1.0", "name": "tunnet", "type": "bridge", "bridge": "tunbr0", "isGateway": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": c.dir, "ranges": []any{[]any{map[string]any{"subnet": "10.77.0.0/24"}}}}}
}

func (c *chain) tuningConf(prev json.RawMessage) map[string]any {
	conf := map[string]any{"cniVersion": "1.1.0", "name": "tunnet", "type": "tuning", "dataDir": filepath.Join(c.dir, "tuning"),
		"mac": "02:42:0a:4d:00:99", "mtu": 1400, "txQLen": 500,
		"sysctl": map[string]string{"net.ipv4.conf.IFNAME.arp_ignore": "1", "net.core.somaxconn": "512"}}
	if prev != nil {
		conf["prevResult"] = prev
	}
	return conf
}

// TestChain runs bridge then tuning through their binaries, as a conflist
// does: the pod keeps its address, reaches its gateway with the MAC tuning
// gave it, the result names that MAC; CHECK passes; DEL in reverse order
// puts everything back and leaves no record.
func TestChain(t *testing.T) {
	c := newChain(t)
	prev := json.RawMessage(c.mustCall("bridge", "ADD", c.bridgeConf()))
	out := c.mustCall("tuning", "ADD", c.tuningConf(prev))
	var res current.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	var eth0 *current.Interface
	for _, i := range res.Interfaces {
		if i.Name == "eth0" {
			eth0 = i
		}
	}
	if eth0 == nil || eth0.Mac != "02:42:0a:4d:00:99" || len(res.IPs) != 1 {
		t.Fatalf("tuning's result:\n%s", out)
	}
	shown := c.pod.Run(t, "ip", "link", "show", "eth0")
	for _, w := range []string{"link/ether 02:42:0a:4d:00:99", "mtu 1400", "qlen 500"} {
		if !strings.Contains(shown, w) {
			t.Errorf("the pod's eth0 shows no %q:\n%s", w, shown)
		}
	}
	if got := c.pod.Run(t, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore", "/proc/sys/net/core/somaxconn"); got != "1\n512\n" {
		t.Errorf("the pod reads %q", got)
	}
	if ping, err := c.pod.Try("ping", "-c", "1", "-W", "2", "10.77.0.1"); err != nil {
		t.Errorf("the pod does not reach its gateway with its new MAC: %v\n%s", err, ping)
	}
	check := c.tuningConf(json.RawMessage(out))
	if out, ok := c.call("tuning", "CHECK", check); !ok {
		t.Errorf("CHECK: %s", out)
	}
	for range 2 {
		c.mustCall("tuning", "DEL", c.tuningConf(nil))
	}
	if got := c.pod.Run(t, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore", "/proc/sys/net/core/somaxconn"); got != "0\n4096\n" {
		t.Errorf("after DEL the pod reads %q, want the defaults back", got)
	}
	if entries, _ := os.ReadDir(filepath.Join(c.dir, "tuning")); len(entries) != 0 {
		t.Errorf("DEL left %v", entries)
	}
	c.mustCall("bridge", "DEL", c.bridgeConf())
}

// TestBinaryBadInput: the binary refuses a bad configuration as the spec
// says (exit 1, the error object on stdout, its code), changing nothing.
func TestBinaryBadInput(t *testing.T) {
	c := newChain(t)
	c.pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	before := c.pod.Run(t, "ip", "link", "show", "eth0")
	prev := json.RawMessage(`{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}]}`)
	for _, tc := range []struct {
		name string
		over map[string]any
		code float64
	}{
		{"sysctl outside the pod's namespace", map[string]any{"sysctl": map[string]string{"kernel.hostname": "x"}}, 7},
		{"path trick", map[string]any{"sysctl": map[string]string{"net.ipv4.conf.IFNAME/../../../../kernel.hostname": "x"}}, 7},
		{"mtu not a number", map[string]any{"mtu": "big"}, 6},
		{"no prevResult", map[string]any{"prevResult": nil}, 7},
	} {
		conf := c.tuningConf(prev)
		for k, v := range tc.over {
			if v == nil {
				delete(conf, k)
			} else {
				conf[k] = v
			}
		}
		out, ok := c.call("tuning", "ADD", conf)
		var e struct {
			Code float64
			Msg  string
		}
		// stdout holds the error object, stderr its log line after it.
		if ok || json.NewDecoder(strings.NewReader(out)).Decode(&e) != nil || e.Code != tc.code || e.Msg == "" {
			t.Errorf("%s: exit 0 %v, stdout %s; want exit 1 and code %v", tc.name, ok, out, tc.code)
		}
	}
	if got := c.pod.Run(t, "ip", "link", "show", "eth0"); got != before {
		t.Errorf("refused ADDs changed eth0:\n%s", got)
	}
	if entries, _ := os.ReadDir(filepath.Join(c.dir, "tuning")); len(entries) != 0 {
		t.Errorf("refused ADDs left %v", entries)
	}
}
