package main

import (
	"context"
	"fmt"
	"time"
)

// hostDevice is the node link host-device moves into each pod: one end of a
// veth pair standing in for a NIC, the other end staying in the node.
const hostDevice = "hdev0"

// hostDeviceScenario moves a node link into each pod. The device is consumed
// by its pod, so each pod gets a fresh one before its ADD and it is removed
// after its DEL gave it back, both outside the timings (podDevice); the pods
// would share the device's name, so there is no concurrent phase.
func hostDeviceScenario() scenario {
	return scenario{
		name:  "host-device+host-local",
		about: "host-device by name (`device`) with IPAM host-local 10.249.0.0/16: a veth end standing in for a NIC, made in the node before each ADD and removed after each DEL (outside the timings)",
		bins:  []string{"host-device", "host-local"},
		conf: func(_, dataDir string) (map[string]any, error) {
			return conflist(map[string]any{"type": "host-device", "device": hostDevice, "ipam": hostLocalIPAM("10.249.0.0/16", dataDir)}), nil
		},
		device:       true,
		noConcurrent: "each pod takes the node's one device name",
		target:       targets{add: 0.5},
	}
}

// podDevice wraps do with the host-device scenario's hooks: a fresh device
// in the node before an ADD, the one DEL gave back removed after it. A DEL
// that did not give it back fails the run here, and the pod's leak count
// shows the link.
func podDevice(node *namespace, do doFunc) doFunc {
	return func(ctx context.Context, v verb, pod int) (time.Duration, error) {
		if v == verbAdd {
			if err := ip(ctx, "-n", node.name, "link", "add", hostDevice, "type", "veth", "peer", "name", fmt.Sprintf("hdp%d", pod)); err != nil {
				return 0, err
			}
		}
		took, err := do(ctx, v, pod)
		if err != nil || v != verbDel {
			return took, err
		}
		if err := ip(ctx, "-n", node.name, "link", "del", hostDevice); err != nil {
			return took, fmt.Errorf("removing the device that pod %d's DEL gave back: %w", pod, err)
		}
		return took, nil
	}
}
