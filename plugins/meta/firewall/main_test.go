package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnisuite/cni/internal/testutil"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// call runs a plugin binary of dir the way a runtime does, inside the node
// namespace when one is given, and returns its stdout; a failure carries
// the exit status and both outputs.
func call(dir, plugin, cmd string, node *netnstest.NS, netns, id, stdin string) (string, error) {
	argv := []string{filepath.Join(dir, plugin)}
	if node != nil {
		argv = append([]string{"ip", "netns", "exec", node.Name}, argv...)
	}
	c := exec.Command(argv[0], argv[1:]...)
	c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID="+id, "CNI_NETNS="+netns, "CNI_IFNAME=eth0", "CNI_PATH="+dir)
	c.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\nstdout: %s\nstderr: %s", plugin, cmd, err, out.String(), errb.String())
	}
	return out.String(), nil
}

// TestBadInputBinary: the binary answers a bad configuration with the
// spec's error object on stdout, its code and what to do, and exit 1.
func TestBadInputBinary(t *testing.T) {
	dir := testutil.Plugins(t, "plugins/meta/firewall")
	for _, tc := range []struct {
		conf string
		code int
		says string
	}{
		{`{"cniVersion":"1.0.0","name":"net","type":"firewall"}`, 7, "chained after"},
		{`{"cniVersion":"1.0.0","name":"net","type":"firewall","backend":"ipfw","prevResult":{"cniVersion":"1.0.0","ips":[]}}`, 7, `"iptables", "nftables" or "firewalld"`},
		{`{"cniVersion":"1.0.0","name":"net"`, 6, "JSON"},
	} {
		out, err := call(dir, "firewall", "ADD", nil, "/run/netns/none", "c1", tc.conf)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("%s: %v, want exit 1", tc.conf, err)
		}
		var e struct {
			CNIVersion string `json:"cniVersion"`
			Code       int    `json:"code"`
			Msg        string `json:"msg"`
		}
		if err := json.Unmarshal([]byte(out), &e); err != nil || e.Code != tc.code || !strings.Contains(e.Msg, tc.says) {
			t.Errorf("%s: stdout %s (%v), want code %d saying %q", tc.conf, out, err, tc.code, tc.says)
		}
	}
}

// TestChainedAfterBridge runs the binaries as a runtime runs the conflist
// bridge + firewall, at two spec versions: the firewall reads the
// bridge's real result (its addresses, and the bridge as its first
// interface for the isolation), passes it through in the configuration's
// version, CHECK passes, and DEL, also once the pod's namespace is gone,
// leaves no rule of the pod.
func TestChainedAfterBridge(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	dir := testutil.Plugins(t, "plugins/main/bridge", "plugins/ipam/host-local", "plugins/meta/firewall")
	for _, v := range []string{"0.4.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			node, pod := netnstest.New(t, "fwb-node"), netnstest.New(t, "fwb-pod")
			bridge := fmt.Sprintf(`{"cniVersion":%q,"name":"fwnet","type":"bridge","bridge":"fwbr0","isGateway":true,
				"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.77.0.0/24"}],[{"subnet":"fd00:77::/64"}]]}}`, v, t.TempDir())
			res, err := call(dir, "bridge", "ADD", node, pod.Path, "c1", bridge)
			if err != nil {
				t.Fatal(err)
			}
			fw := fmt.Sprintf(`{"cniVersion":%q,"name":"fwnet","type":"firewall","backend":"iptables","ingressPolicy":"isolated","prevResult":%s}`, v, res)
			out, err := call(dir, "firewall", "ADD", node, pod.Path, "c1", fw)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Address string `json:"address"`
				} `json:"ips"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.CNIVersion != v || len(got.IPs) != 2 {
				t.Fatalf("ADD printed %s (%v)", out, err)
			}
			rules := node.Run(t, "iptables-save", "-t", "filter") + node.Run(t, "ip6tables-save", "-t", "filter")
			for _, want := range []string{"-s " + strings.Replace(got.IPs[0].Address, "/24", "/32", 1) + " -m comment --comment \"firewall name: fwnet id: c1 ifname: eth0\"",
				"-i fwbr0 -o fwbr0 -m comment", "-s " + strings.Replace(got.IPs[1].Address, "/64", "/128", 1)} {
				if !strings.Contains(rules, want) {
					t.Errorf("the rules lack %q:\n%s", want, rules)
				}
			}
			if _, err := call(dir, "firewall", "CHECK", node, pod.Path, "c1", fw); err != nil {
				t.Error(err)
			}
			pod.Delete(t)
			noPrev := fmt.Sprintf(`{"cniVersion":%q,"name":"fwnet","type":"firewall"}`, v)
			for range 2 {
				if _, err := call(dir, "firewall", "DEL", node, pod.Path, "c1", noPrev); err != nil {
					t.Fatal(err)
				}
			}
			if rules := node.Run(t, "iptables-save", "-t", "filter"); strings.Contains(rules, "id: c1 ") {
				t.Errorf("after DEL:\n%s", rules)
			}
			if _, err := call(dir, "bridge", "DEL", node, pod.Path, "c1", bridge); err != nil {
				t.Error(err)
			}
		})
	}
}
