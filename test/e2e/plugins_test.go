package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cnisuite/cni/pkg/dhcp/dhcptest"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// validConf returns a configuration the plugin accepts, keeping its state
// under dataDir. The malformed-input and version tests run every binary in
// ./plugins, so a new binary needs an entry here.
func validConf(t *testing.T, plugin, dataDir string) map[string]any {
	t.Helper()
	conf := map[string]any{"cniVersion": "1.1.0", "name": "e2e", "type": plugin}
	ipam := map[string]any{
		"type":    "host-local",
		"ranges":  []any{[]any{map[string]any{"subnet": "10.99.0.0/24"}}},
		"dataDir": dataDir,
	}
	switch plugin {
	case "loopback":
	case "host-local":
		conf["ipam"] = ipam
	case "static":
		conf["ipam"] = map[string]any{"type": "static", "addresses": []any{map[string]any{"address": "10.99.0.5/24"}}}
	case "dhcp":
		conf["ipam"] = map[string]any{"type": "dhcp", "daemonSocketPath": filepath.Join(dataDir, "dhcp.sock")}
	case "bridge":
		conf["bridge"] = "e2ebr0"
		conf["ipam"] = ipam
	case "macvlan":
		conf["master"] = macvlanMaster
		conf["ipam"] = ipam
	case "ptp", "tap":
		conf["ipam"] = ipam
	case "host-device":
		conf["device"] = hostDevice
		conf["ipam"] = ipam
	case "sbr":
		conf["prevResult"] = map[string]any{"cniVersion": "1.1.0",
			"interfaces": []any{map[string]any{"name": "eth0", "sandbox": "pod"}},
			"ips":        []any{map[string]any{"address": "10.99.0.5/24", "gateway": "10.99.0.1", "interface": 0}}}
	case "flannel":
		flannelValidConf(t, conf, dataDir)
	case "bandwidth":
		// No limits: the prevResult passes through, as for a pod without bandwidth
		// annotations (pkg/bandwidth's own tests shape real links).
		conf["capabilities"] = map[string]any{"bandwidth": true}
		conf["prevResult"] = map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.99.0.5/24"}}}
	case "firewall":
		conf["backend"] = "iptables"
		conf["prevResult"] = map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.99.0.5/24"}}}
	case "tuning":
		conf["sysctl"] = map[string]any{"net.core.somaxconn": "500", "net.ipv4.conf.IFNAME.forwarding": "1"}
		conf["mtu"] = 1400
		conf["dataDir"] = filepath.Join(dataDir, "tuning")
		conf["prevResult"] = map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.99.0.5/24"}}}
	case "portmap":
		conf["runtimeConfig"] = map[string]any{"portMappings": []any{portmapMapping(18080)}}
		conf["prevResult"] = map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.99.0.5/24"}}}
	default:
		t.Fatalf("no valid configuration for plugin %q: add one to validConf", plugin)
	}
	return conf
}

// entersContainer tells the plugins that work inside CNI_NETNS (dhcp's
// daemon does) from the IPAM plugins that never look at it.
func entersContainer(plugin string) bool { return plugin != "host-local" && plugin != "static" }

// hostLocalIPAM says whether the plugin's valid configuration reserves
// through host-local, which the malformed ranges and CNI_ARGS of badInputs
// with ipam set are written for.
func hostLocalIPAM(t *testing.T, plugin string) bool {
	ipam, _ := validConf(t, plugin, t.TempDir())["ipam"].(map[string]any)
	return ipam != nil && ipam["type"] == "host-local"
}

// sandbox is where a test runs a plugin: as root, inside a node namespace
// with a real pod namespace as CNI_NETNS; otherwise directly, with a
// CNI_NETNS that does not exist (without root a plugin can change nothing).
type sandbox struct {
	node, pod *netnstest.NS
	podLinks  []string // what the pod holds between calls: lo and what prepare gave it
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	if os.Geteuid() != 0 {
		return &sandbox{}
	}
	return &sandbox{node: netnstest.New(t, "cni-e2e-node"), pod: netnstest.New(t, "cni-e2e-pod"), podLinks: []string{"lo"}}
}

func (s *sandbox) privileged() bool { return s.node != nil }

// portmapMapping maps a host port to the container's port 80.
func portmapMapping(hostPort int) map[string]any {
	return map[string]any{"hostPort": hostPort, "containerPort": 80, "protocol": "tcp"}
}

// macvlanMaster is the node link that validConf gives macvlan as master.
const macvlanMaster = "e2emaster"

// hostDevice is the node link that validConf lends the pod with host-device.
const hostDevice = "e2edev"

// prepare gives the sandbox what plugin's validConf with dataDir refers to:
// macvlan needs its master (a bridge: Ethernet, and unseen by clean's veth
// check), host-device a device (a tap: movable, and unseen by clean), tuning
// and sbr the pod's eth0 (a veth pair inside the pod), as a chain before them
// leaves it (sbr routes from its address, so eth0 has it, up), dhcp its
// daemon on dataDir's socket and a DHCP server behind the pod's eth0.
func (s *sandbox) prepare(t *testing.T, plugin, dataDir string) {
	t.Helper()
	switch {
	case !s.privileged():
	case plugin == "dhcp":
		dhcptest.Skip(t)
		srv := netnstest.New(t, "cni-e2e-srv")
		s.pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "s0", "netns", srv.Name)
		s.podLinks = append(s.podLinks, "eth0")
		srv.Run(t, "ip", "addr", "add", dhcptest.ServerIP+"/24", "dev", "s0")
		srv.Run(t, "ip", "link", "set", "s0", "up")
		lab := dhcptest.New(t, dataDir)
		lab.StartServer(srv, "s0")
		lab.StartDaemon(s.node)
	case plugin == "macvlan":
		s.node.Run(t, "ip", "link", "add", macvlanMaster, "type", "bridge")
	case plugin == "host-device":
		s.node.Run(t, "ip", "tuntap", "add", hostDevice, "mode", "tap")
	case plugin == "tuning" || plugin == "sbr":
		s.pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
		s.podLinks = append(s.podLinks, "eth0", "eth0peer")
		if plugin == "sbr" {
			s.pod.Run(t, "ip", "addr", "add", "10.99.0.5/24", "dev", "eth0")
			s.pod.Run(t, "ip", "link", "set", "eth0", "up")
			s.pod.Run(t, "ip", "link", "set", "eth0peer", "up")
		}
	}
}

// renew gives back what plugin took from the sandbox and a runtime makes
// anew for each pod: sbr moves eth0's routes out of the main table, and its
// DEL leaves them to the interface's removal.
func (s *sandbox) renew(t *testing.T, plugin string) {
	t.Helper()
	if s.privileged() && plugin == "sbr" {
		s.pod.Run(t, "ip", "route", "replace", "10.99.0.0/24", "dev", "eth0", "src", "10.99.0.5")
	}
}

func (s *sandbox) netns() string {
	if s.pod == nil {
		return noNetns
	}
	return s.pod.Path
}

// call prepares a run of plugin inside the sandbox.
func (s *sandbox) call(plugin, cmd string, stdin []byte) pluginCall {
	return pluginCall{plugin: plugin, cmd: cmd, stdin: stdin, node: s.node, env: map[string]string{"CNI_NETNS": s.netns()}}
}

// clean fails when a call left a link on the node or in the pod.
func (s *sandbox) clean(t *testing.T) {
	t.Helper()
	if !s.privileged() {
		return
	}
	for _, typ := range []string{"veth", "macvlan"} {
		if links := s.node.Links(t, "type", typ); len(links) > 0 {
			t.Errorf("%s left on the node: %v", typ, links)
		}
	}
	if links := s.pod.Links(t); !sameSet(links, s.podLinks) {
		t.Errorf("pod holds %v, want %v", links, s.podLinks)
	}
}
