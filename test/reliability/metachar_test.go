package reliability

import (
	"os"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// payloads would each create the file "pwned" in the plugin's working
// directory if any shell ever saw them.
var payloads = []string{
	"a;touch pwned", "a$(touch pwned)", "a`touch pwned`", "a|touch pwned", "a&&touch pwned",
	"a\ntouch pwned", "a'\";touch pwned;'", "a>pwned",
}

// TestShellMetacharacters: user data with shell syntax in the network name,
// the container ID, the ifname and a port mapping's hostIP is rejected with
// a CNI error or taken literally: no command runs, no crash, and a DEL
// with the same input leaves no link behind.
func TestShellMetacharacters(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	node, pod := netnstest.New(t, "cni-rel-node"), netnstest.New(t, "cni-rel-pod")
	for _, p := range payloads {
		for _, field := range []string{"name", "containerID", "ifname", "hostIP"} {
			cwd := t.TempDir()
			c := metacharCall(t, field, p, node, pod, t.TempDir())
			c.dir = cwd
			add := c.run(t)
			code := add.code(t)
			if code != 0 && code != 4 && code != 7 { // 4: invalid CNI_* variable, 7: invalid config
				t.Errorf("%s=%q: ADD code %d, want success, 4 or 7: %s", field, p, code, add.stdout)
			}
			c.cmd = "DEL"
			if del := c.run(t); add.exit == 0 && del.exit != 0 {
				t.Errorf("%s=%q: DEL after a successful ADD failed: %s", field, p, del.stdout)
			}
			if entries, _ := os.ReadDir(cwd); len(entries) != 0 {
				t.Fatalf("%s=%q: a shell ran the payload: %s holds %v", field, p, cwd, entries)
			}
			if veths := node.Links(t, "type", "veth"); len(veths) > 0 {
				t.Fatalf("%s=%q (ADD code %d): veth left on the node: %v", field, p, code, veths)
			}
		}
	}
}

// metacharCall is an ADD of bridge (or portmap for hostIP) with the payload
// in field.
func metacharCall(t *testing.T, field, payload string, node, pod *netnstest.NS, dataDir string) call {
	c := call{cmd: "ADD", node: node, netns: pod.Path, containerID: "meta-ctr", ifname: "eth0", umask: -1}
	conf := map[string]any{"cniVersion": "1.1.0", "name": "relmeta", "type": "bridge", "bridge": "relbr0",
		"ipam": map[string]any{"type": "host-local", "dataDir": dataDir,
			"ranges": []any{[]any{map[string]any{"subnet": "10.96.0.0/24"}}}}}
	c.plugin = "bridge"
	switch field {
	case "name":
		conf["name"] = payload
	case "containerID":
		c.containerID = payload
	case "ifname":
		c.ifname = payload
	case "hostIP":
		c.plugin = "portmap"
		conf = map[string]any{"cniVersion": "1.1.0", "name": "relmeta", "type": "portmap",
			"runtimeConfig": map[string]any{"portMappings": []any{map[string]any{
				"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": payload}}},
			"prevResult": map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.96.0.5/24"}}}}
	}
	c.stdin = mustJSON(t, conf)
	return c
}
