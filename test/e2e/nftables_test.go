package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// hideSbin, run as `sh -c hideSbin prog args...` in a private mount
// namespace, covers /usr/sbin (where Debian keeps iptables, ip6tables and
// their save and restore commands; /sbin links to it) with an empty tmpfs
// and runs prog: a host without iptables, for prog and its children only.
const hideSbin = `mount -t tmpfs -o ro,size=4k tmpfs /usr/sbin && exec "$0" "$@"`

// withoutIPTables is the prefix of a command run where iptables is not
// installed.
func withoutIPTables() []string {
	return []string{"unshare", "--mount", "--propagation", "private", "--", "sh", "-c", hideSbin}
}

// pluginsWithoutIPTables is a CNI_PATH whose plugins each run where
// iptables is not installed (a plugin's delegates come from the same path).
func pluginsWithoutIPTables(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range plugins(t) {
		script := fmt.Sprintf("#!/bin/sh\nexec unshare --mount --propagation private -- sh -c '%s' %s \"$@\"\n", hideSbin, filepath.Join(binDir, name))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestNFTablesOnlyNodes: on nodes without iptables, subnetd picks nftables
// by itself (flanneld's tables) and so does the bridge the flannel plugin
// delegates to (the reference's table): pods reach each other over the
// overlay and leave the cluster network as their node, masqueraded by
// subnetd on node1 and by the bridge on node2 (subnetd without --ip-masq),
// and no iptables rule exists. DEL takes the bridge's rule. Then node1's
// subnetd switches to iptables (installed again) and back with
// EnableNFTables: each time no rule of the old mode is left.
func TestNFTablesOnlyNodes(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	o := newOverlay(t, "/e2e/nft", `{"Network":"10.253.0.0/16","Backend":{"Type":"vxlan"}}`)
	plugins := pluginsWithoutIPTables(t)
	n1, n2 := o.addNode(1), o.addNode(2)
	o.startSubnetd(n1, withoutIPTables())
	o.startSubnetd(n2, withoutIPTables(), "--ip-masq=false")
	var pods []*flannelPod
	for _, n := range o.nodes {
		n.cniPath = plugins
		o.waitReady(n)
		pods = append(pods, o.addFlannelPod(n, nil))
	}
	pingAll(t, pods[0].ns, addrsOf(pods[1].res))
	pingAll(t, pods[1].ns, addrsOf(pods[0].res))
	serveFunc(t, o.ul, sdUnderlay+":8081", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprint(w, host)
	})
	for _, p := range pods {
		if code, from := p.ns.HTTP(sdUnderlay+":8081", "GET", "/", nil); code != 200 || from != p.node.ip {
			t.Errorf("pod on %s to the underlay: HTTP %d, seen from %q, want from the node's %s\n%s", p.node.name, code, from, p.node.ip, nftState(n1.ns)+nftState(n2.ns))
		}
	}
	o.eventually("node1's masquerading and forward chains", 10*time.Second, func() bool {
		return hasChain(n1.ns, "ip flannel-ipv4 postrtg") && hasChain(n1.ns, "ip flannel-ipv4 forward")
	})
	if hasChain(n2.ns, "ip flannel-ipv4 postrtg") || !hasChain(n2.ns, "ip flannel-ipv4 forward") {
		t.Errorf("node2 (subnetd without --ip-masq) should have flannel's forward chain only:\n%s", nftState(n2.ns))
	}
	if n := masqRules(n2.ns); n != 1 {
		t.Errorf("node2: %d rules of pods in the bridge's masquerade table, want 1:\n%s", n, nftState(n2.ns))
	}
	for _, n := range o.nodes {
		noIPTablesRules(t, n)
	}
	for _, p := range pods {
		if err := p.do(t, p.c.cni.DelNetworkList); err != nil {
			t.Fatalf("DEL on %s: %v", p.node.name, err)
		}
	}
	if n := masqRules(n2.ns); n != 0 {
		t.Errorf("node2: %d pod rules left in the bridge's masquerade table after DEL:\n%s", n, nftState(n2.ns))
	}
	switchModes(t, o, n1)
}

// switchModes restarts n's subnetd with iptables installed, then with
// EnableNFTables: the old mode's rules go each time.
func switchModes(t *testing.T, o *overlayTest, n *sdNode) {
	inIPTables := func() bool {
		out, _ := n.ns.Try("iptables-save", "-t", "nat")
		return strings.Contains(out, ":FLANNEL-POSTRTG")
	}
	restart := func() {
		stop(n.proc)
		o.startSubnetd(n, nil)
		o.waitReady(n)
	}
	restart()
	o.eventually("node1's rules moved to iptables", 10*time.Second, func() bool { return inIPTables() && !hasTable(n.ns, "ip flannel-ipv4") })
	// The cluster's network config, in etcd and in --net-config alike.
	const nftConf = `{"Network":"10.253.0.0/16","Backend":{"Type":"vxlan"},"EnableNFTables":true}`
	mustWriteFile(t, o.netConf, nftConf)
	if _, err := o.etcdCall("/v3/kv/put", map[string]string{"key": b64(o.prefix + "/config"), "value": b64(nftConf)}); err != nil {
		t.Fatal(err)
	}
	restart()
	o.eventually("node1's rules moved to nftables (EnableNFTables)", 10*time.Second, func() bool {
		return !inIPTables() && hasChain(n.ns, "ip flannel-ipv4 postrtg")
	})
	noIPTablesRules(t, n)
}

// hasChain reports whether `nft list chain` finds "family table chain".
func hasChain(ns *netnstest.NS, chain string) bool {
	_, err := ns.Try(append([]string{"nft", "list", "chain"}, strings.Fields(chain)...)...)
	return err == nil
}

func hasTable(ns *netnstest.NS, table string) bool {
	_, err := ns.Try(append([]string{"nft", "list", "table"}, strings.Fields(table)...)...)
	return err == nil
}

// masqRules counts the pods' rules in the bridge's nftables masquerading.
func masqRules(ns *netnstest.NS) int {
	out, err := ns.Try("nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks")
	if err != nil {
		return 0
	}
	return strings.Count(out, "masquerade comment")
}

// noIPTablesRules fails the test if the suite left any iptables chain on n.
func noIPTablesRules(t *testing.T, n *sdNode) {
	t.Helper()
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out := n.ns.Run(t, save)
		if strings.Contains(out, "FLANNEL") || strings.Contains(out, "CNI-") {
			t.Errorf("%s on %s finds the suite's rules:\n%s", save, n.name, out)
		}
	}
}

func nftState(ns *netnstest.NS) string {
	out, err := ns.Try("nft", "list", "ruleset")
	if err != nil {
		return err.Error()
	}
	return ns.Name + ":\n" + out
}
