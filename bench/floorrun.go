package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"time"

	"github.com/cnisuite/cni/pkg/netns"
)

// floorTarget is the bound on ours / the floor, for ADD and DEL.
const floorTarget = 1.5

// floorSpec is what the floor program (bench/floor) does for a pod of a
// scenario: the kernel calls the chain's ADD and DEL must make, with the
// addresses fixed per pod and nothing else (no configuration, no IPAM
// state, no result).
type floorSpec struct {
	// setup leaves the floor's node as the chain leaves a node after its
	// first pod: the bridge with its gateway address, the macvlan master.
	setup func(ctx context.Context, node *namespace, sd side, dataDir string) error
	add   func(pod int) []string // the floor's ADD flags for the pod
}

// floorAddr is the pod's address in a /24 whose .1 is the gateway. Past 250
// pods it repeats, which the kernel allows: the pods are namespaces of
// their own and send nothing.
func floorAddr(net24 string, pod int) string { return fmt.Sprintf("%s.%d/24", net24, 2+pod%250) }

// bridgeFloor is what bridge+host-local (flannelBridge) does for a pod: a
// veth pair, its pod end eth0 with MTU 1450, the pod's address, the default
// route (isDefaultGateway) and the IPAM route via the gateway; its node end
// on cni0 with hairpin mode; both up.
func bridgeFloor() *floorSpec {
	return &floorSpec{setup: setupBridge, add: func(pod int) []string {
		return []string{"-kind", "bridge", "-link", "cni0", "-mtu", "1450", "-hairpin",
			"-addr", floorAddr("10.244.1", pod), "-gw", "10.244.1.1", "-route", "0.0.0.0/0", "-route", "10.244.0.0/16"}
	}}
}

// macvlanFloor is what macvlan+host-local does for a pod: a bridge-mode
// macvlan on the master, created in the pod as eth0, with the pod's
// address, up. host-local has no routes in that configuration, so neither
// has the floor.
func macvlanFloor() *floorSpec {
	return &floorSpec{setup: setupMaster, add: func(pod int) []string {
		return []string{"-kind", "macvlan", "-link", macvlanMaster, "-addr", floorAddr("10.245.1", pod)}
	}}
}

// setupBridge makes cni0 as the bridge plugin leaves it (isGateway): up,
// with flannelBridge's gateway address.
func setupBridge(ctx context.Context, node *namespace, _ side, _ string) error {
	for _, args := range [][]string{
		{"link", "add", "cni0", "type", "bridge"},
		{"addr", "add", "10.244.1.1/24", "dev", "cni0"},
		{"link", "set", "cni0", "up"},
	} {
		if err := ip(ctx, append([]string{"-n", node.name}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

// floorRun is the floor program's node in one scenario, with pods of its own.
type floorRun struct {
	spec floorSpec
	bin  string
	node *namespace
	pods []*namespace
}

// prepareFloor creates the floor's node and pods, runs its setup and a
// warm-up pod.
func prepareFloor(ctx context.Context, nss *namespaces, spec floorSpec, tag string, pods int, bin string) (*floorRun, error) {
	node, podNS, err := addNode(ctx, nss, tag, max(pods, 1))
	if err != nil {
		return nil, err
	}
	if err := spec.setup(ctx, node, side{name: "floor"}, ""); err != nil {
		return nil, err
	}
	f := &floorRun{spec: spec, bin: bin, node: node, pods: podNS}
	return f, f.participant().warmUp(ctx)
}

func (f *floorRun) participant() participant {
	return participant{name: "floor", verbs: []verb{verbAdd, verbDel}, do: f.do}
}

// do execs the floor program from the node, as a runtime execs a plugin,
// and returns its wall time from start to exit.
func (f *floorRun) do(ctx context.Context, v verb, pod int) (time.Duration, error) {
	path := f.pods[pod].path
	var args []string
	switch v {
	case verbAdd:
		args = slices.Concat([]string{"add"}, f.spec.add(pod), []string{path})
	case verbDel:
		args = []string{"del", path}
	default:
		return 0, fmt.Errorf("the floor program has no %s", v)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.bin, args...)
	var took time.Duration
	err := netns.Do(f.node.path, func() error {
		var err error
		took, err = timed(cmd)
		return err
	})
	if err != nil {
		return took, fmt.Errorf("floor %s of pod %s: %w", v, f.pods[pod].name, err)
	}
	return took, nil
}
