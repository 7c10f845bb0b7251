package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// flannelEnv is the subnet.env a node running subnetd (or flanneld) writes
// for the lease 10.244.1.0/24: the same values flannelBridge is rendered from.
const flannelEnv = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"

// flannelScenario is the shipped flannel conflist (flannel + portmap +
// bandwidth) on our side against what the reference runs for it: flannel's
// plugin is not on the module proxy, so the reference side gets the bridge +
// host-local delegate flannel renders from the same subnet.env, chained with
// the reference portmap and bandwidth. Both get the portmap scenario's 2
// mappings per pod and no bandwidth limits (a pod without the annotations).
func flannelScenario() scenario {
	return scenario{
		name: "flannel chain",
		about: "ours: conf/10-flannel.conflist as shipped (flannel + portmap + bandwidth) reading a subnet.env for 10.244.1.0/24, mtu 1450, ipmasq true; " +
			"reference: the bridge+host-local delegate flannel renders from it + portmap + bandwidth; 2 mappings (tcp, udp) per pod on both, no bandwidth limits",
		bins:   []string{"bridge", "host-local", "portmap", "bandwidth"},
		shared: []string{"cni0"},
		conf: func(_, dataDir string) (map[string]any, error) {
			pm := map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}}
			bw := map[string]any{"type": "bandwidth", "capabilities": map[string]any{"bandwidth": true}}
			return conflist(flannelBridge(dataDir), pm, bw), nil
		},
		oursConf: oursFlannel,
		capArgs:  portMappings,
		target:   targets{add: 0.3, del: 0.3, conc: 3, cnitoolAdd: 0.3, cnitoolDel: 0.3},
	}
}

// oursFlannel is conf/10-flannel.conflist with its subnet.env beside dataDir
// and every directory it writes under dataDir, so that the leak count sees
// flannel's saved delegate configs as well as host-local's reservations.
func oursFlannel(repo, dataDir string) (map[string]any, error) {
	c, err := repoConflist(repo, "10-flannel.conflist", dataDir)
	if err != nil {
		return nil, err
	}
	env := filepath.Join(filepath.Dir(dataDir), "subnet.env")
	if err := os.MkdirAll(filepath.Dir(env), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(env, []byte(flannelEnv), 0o644); err != nil {
		return nil, err
	}
	plugins, _ := c["plugins"].([]any)
	if len(plugins) == 0 {
		return nil, fmt.Errorf("conf/10-flannel.conflist has no plugins")
	}
	fl, _ := plugins[0].(map[string]any)
	if fl == nil || fl["type"] != "flannel" {
		return nil, fmt.Errorf("conf/10-flannel.conflist: the first plugin is not flannel")
	}
	fl["subnetFile"] = env
	fl["dataDir"] = filepath.Join(dataDir, "flannel")
	fl["ipam"] = map[string]any{"dataDir": dataDir}
	return c, nil
}
