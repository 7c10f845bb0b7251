package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// scenario is one conflist measured on both sides.
type scenario struct {
	name   string   // as in the table
	about  string   // the configuration, for the report
	bins   []string // binaries both sides need for it
	shared []string // links the chain creates in the node and keeps (the bridge)
	conf   func(repo, dataDir string) (map[string]any, error)
	// oursConf, when set, is our side's configuration instead of conf.
	oursConf func(repo, dataDir string) (map[string]any, error)
	setup    func(ctx context.Context, node *namespace, sd side, dataDir string) error // nil: nothing to prepare
	capArgs  func(pod int) map[string]any                                              // nil: no runtime capabilities
	target   targets
	// prefill is how many reservations of other pods the network holds
	// before the first ADD (see hostLocalScenario).
	prefill int
	// noCheck, when set, says why CHECK is not measured.
	noCheck string
	// device: each pod takes a node device, made before its ADD and removed
	// after its DEL (podDevice).
	device bool
	// noConcurrent, when set, says why there is no concurrent phase.
	noConcurrent string
	// floor, when set, is what the floor program does for a pod of this
	// chain; the rows "vs floor" compare ours with it.
	floor *floorSpec
}

// verbs are what the sequential phase measures, in order.
func (sc scenario) verbs() []verb {
	if sc.noCheck != "" {
		return []verb{verbAdd, verbDel}
	}
	return []verb{verbAdd, verbCheck, verbDel}
}

// targets are the bounds on the ratios ours/reference; 0 is none.
type targets struct {
	add, check, del        float64 // latency medians, lower is better
	conc                   float64 // concurrent ADD+DEL pods/s, higher is better
	cnitoolAdd, cnitoolDel float64 // the same under the cnitool driver
}

// flannelBridge is the bridge + host-local delegate that flannel's plugin
// renders from a subnet.env with FLANNEL_SUBNET=10.244.1.1/24, FLANNEL_MTU=1450
// and FLANNEL_IPMASQ=true (the daemon masquerades, so the bridge does not),
// with the shipped conflist's hairpinMode and isDefaultGateway.
func flannelBridge(dataDir string) map[string]any {
	return map[string]any{
		"type": "bridge", "bridge": "cni0", "mtu": 1450, "ipMasq": false,
		"isGateway": true, "isDefaultGateway": true, "hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  []any{[]any{map[string]any{"subnet": "10.244.1.0/24"}}},
			"routes":  []any{map[string]any{"dst": "10.244.0.0/16"}},
			"dataDir": dataDir,
		},
	}
}

func conflist(plugins ...map[string]any) map[string]any {
	list := make([]any, len(plugins))
	for i, p := range plugins {
		list[i] = p
	}
	return map[string]any{"cniVersion": "1.0.0", "name": "cbr0", "plugins": list}
}

// repoConflist reads one of the repository's example conflists and points
// its IPAM at dataDir, so that nothing lands in the machine's /var/lib/cni.
func repoConflist(repo, name, dataDir string) (map[string]any, error) {
	raw, err := os.ReadFile(filepath.Join(repo, "conf", name))
	if err != nil {
		return nil, err
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("conf/%s: %w", name, err)
	}
	plugins, _ := c["plugins"].([]any)
	for _, p := range plugins {
		if ipam, ok := p.(map[string]any)["ipam"].(map[string]any); ok {
			ipam["dataDir"] = dataDir
		}
	}
	return c, nil
}

// ptpConf is ptp with ipMasq over host-local: a routed pod as cloud CNIs
// make them.
func ptpConf(dataDir string) map[string]any {
	return map[string]any{"type": "ptp", "ipMasq": true, "ipam": hostLocalIPAM("10.247.0.0/16", dataDir)}
}

// hostLocalIPAM is host-local over one subnet, its state in dataDir.
func hostLocalIPAM(subnet, dataDir string) map[string]any {
	return map[string]any{"type": "host-local", "ranges": []any{[]any{map[string]any{"subnet": subnet}}}, "dataDir": dataDir}
}

// portMappings are the two hostPort mappings of pod i: one TCP, one UDP (the
// reference flushes conntrack for UDP), on ports no other pod uses.
func portMappings(pod int) map[string]any {
	return map[string]any{"portMappings": []map[string]any{
		{"hostPort": 20000 + 2*pod, "containerPort": 80, "protocol": "tcp"},
		{"hostPort": 20001 + 2*pod, "containerPort": 53, "protocol": "udp"},
	}}
}

// podBandwidth is what kubelet passes for a pod with both bandwidth annotations.
func podBandwidth(int) map[string]any {
	return map[string]any{"bandwidth": map[string]any{
		"ingressRate": 100_000_000, "ingressBurst": 1_000_000, "egressRate": 100_000_000, "egressBurst": 1_000_000}}
}

// staticIPs is pod i's address for static IPAM, unique among the pods of a run.
func staticIPs(pod int) map[string]any {
	return map[string]any{"ips": []string{fmt.Sprintf("10.246.%d.%d/16", pod/250, 2+pod%250)}}
}

// macvlanMaster is the node's "physical" interface for macvlan: one end of a
// veth pair whose both ends stay in the node.
const macvlanMaster = "ulink0"

func setupMaster(ctx context.Context, node *namespace, _ side, _ string) error {
	if err := ip(ctx, "-n", node.name, "link", "add", macvlanMaster, "type", "veth", "peer", "name", macvlanMaster+"p"); err != nil {
		return err
	}
	if err := ip(ctx, "-n", node.name, "link", "set", macvlanMaster+"p", "up"); err != nil {
		return err
	}
	return ip(ctx, "-n", node.name, "link", "set", macvlanMaster, "up")
}

// scenarios are every chain the bench measures, with the targets.
// The lease daemons and the data plane are measured apart (subnetd.go, dataplane.go).
func scenarios() []scenario {
	bridgeTargets := targets{add: 0.5, del: 0.8, conc: 1.5}
	return []scenario{{
		name:   "bridge+host-local",
		about:  "flannel's delegate: bridge cni0, mtu 1450, isDefaultGateway, hairpinMode, ipMasq false; host-local 10.244.1.0/24",
		bins:   []string{"bridge", "host-local"},
		shared: []string{"cni0"},
		conf: func(_, dataDir string) (map[string]any, error) {
			return conflist(flannelBridge(dataDir)), nil
		},
		target: bridgeTargets,
		floor:  bridgeFloor(),
	}, {
		name:   "cbr0 conflist",
		about:  "conf/10-cbr0.conflist as shipped: bridge dual-stack with ipMasq, host-local IPv4 + IPv6",
		bins:   []string{"bridge", "host-local"},
		shared: []string{"cni0"},
		conf: func(repo, dataDir string) (map[string]any, error) {
			return repoConflist(repo, "10-cbr0.conflist", dataDir)
		},
		target: bridgeTargets,
	}, {
		name:   "bridge+host-local+portmap",
		about:  "the bridge+host-local delegate chained with portmap (snat default), 2 mappings (tcp, udp) per pod",
		bins:   []string{"bridge", "host-local", "portmap"},
		shared: []string{"cni0"},
		conf: func(_, dataDir string) (map[string]any, error) {
			pm := map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}}
			return conflist(flannelBridge(dataDir), pm), nil
		},
		capArgs: portMappings,
		target:  targets{add: 0.3, del: 0.3, conc: 3, cnitoolAdd: 0.3, cnitoolDel: 0.3},
	}, {
		name:  "macvlan+host-local",
		about: "macvlan mode bridge on a veth master in the node; host-local 10.245.1.0/24",
		bins:  []string{"macvlan", "host-local"},
		conf: func(_, dataDir string) (map[string]any, error) {
			return conflist(map[string]any{
				"type": "macvlan", "master": macvlanMaster, "mode": "bridge", "ipam": hostLocalIPAM("10.245.1.0/24", dataDir),
			}), nil
		},
		setup:  setupMaster,
		target: targets{conc: 1.5},
		floor:  macvlanFloor(),
	}, {
		name:   "bridge+static",
		about:  "bridge cni0 as flannel's delegate, IPAM static with the pod's address from runtimeConfig.ips (capability ips, as Multus passes it)",
		bins:   []string{"bridge", "static"},
		shared: []string{"cni0"},
		conf: func(_, _ string) (map[string]any, error) {
			br := flannelBridge("")
			br["capabilities"] = map[string]any{"ips": true}
			br["ipam"] = map[string]any{"type": "static", "routes": []any{map[string]any{"dst": "10.246.0.0/16"}}}
			return conflist(br), nil
		},
		capArgs: staticIPs,
		target:  targets{add: 0.5, del: 0.5},
	}, {
		name:   "bridge+host-local+tuning",
		about:  "the bridge+host-local delegate chained with tuning: a namespaced sysctl and a per-interface one, restored on DEL (ours)",
		bins:   []string{"bridge", "host-local", "tuning"},
		shared: []string{"cni0"},
		conf: func(_, dataDir string) (map[string]any, error) {
			tuning := map[string]any{"type": "tuning", "dataDir": filepath.Join(dataDir, "tuning"), "sysctl": map[string]any{
				"net.core.somaxconn": "500", "net.ipv4.conf.IFNAME.accept_redirects": "0"}}
			return conflist(flannelBridge(dataDir), tuning), nil
		},
		target: targets{add: 0.5, del: 0.5},
	}, {
		name:   "bridge+host-local+bandwidth",
		about:  "the bridge+host-local delegate chained with bandwidth, each pod shaped both ways as kubelet asks from its annotations (runtimeConfig.bandwidth: 100 Mbit/s, bursts of 1 Mbit)",
		bins:   []string{"bridge", "host-local", "bandwidth"},
		shared: []string{"cni0"},
		conf: func(_, dataDir string) (map[string]any, error) {
			bw := map[string]any{"type": "bandwidth", "capabilities": map[string]any{"bandwidth": true}}
			return conflist(flannelBridge(dataDir), bw), nil
		},
		capArgs: podBandwidth,
		target:  targets{add: 0.5, del: 0.5},
	}, {
		name:   "bridge+host-local+firewall",
		about:  "the bridge+host-local delegate chained with firewall (iptables backend, ingressPolicy open)",
		bins:   []string{"bridge", "host-local", "firewall"},
		shared: []string{"cni0"},
		conf: func(_, dataDir string) (map[string]any, error) {
			return conflist(flannelBridge(dataDir), map[string]any{"type": "firewall", "backend": "iptables"}), nil
		},
		target: targets{add: 0.5, del: 0.5},
	}, {
		name:   "ptp+host-local",
		about:  "ptp with ipMasq (iptables), IPAM host-local 10.247.0.0/16: a routed veth pair per pod, no bridge",
		bins:   []string{"ptp", "host-local"},
		conf:   func(_, dataDir string) (map[string]any, error) { return conflist(ptpConf(dataDir)), nil },
		target: targets{add: 0.5},
	}, {
		name:  "ptp+host-local+sbr",
		about: "the ptp+host-local configuration chained with sbr: a routing table and a rule per pod address",
		bins:  []string{"ptp", "host-local", "sbr"},
		conf: func(_, dataDir string) (map[string]any, error) {
			return conflist(ptpConf(dataDir), map[string]any{"type": "sbr"}), nil
		},
		noCheck: "the reference's ptp fails CHECK once its sbr moved the pod's routes out of the main table (\"Failed to find Gateway\")",
		target:  targets{add: 0.5},
	}, {
		name:  "tap+host-local",
		about: "tap, multi-queue, IPAM host-local 10.248.0.0/16: a persistent tap in each pod",
		bins:  []string{"tap", "host-local"},
		conf: func(_, dataDir string) (map[string]any, error) {
			return conflist(map[string]any{"type": "tap", "multiQueue": true, "ipam": hostLocalIPAM("10.248.0.0/16", dataDir)}), nil
		},
		target: targets{add: 0.5},
	}, hostDeviceScenario(), dhcpScenario(), flannelScenario(), hostLocalScenario(10, targets{}), hostLocalScenario(1000, targets{add: 0.5, del: 0.5})}
}
