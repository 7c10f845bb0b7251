package kubetest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodConfig is a pod sandbox's configuration as kubelet would give it:
// name in namespace "default" with a uid made of it, its cgroup under
// CgroupRoot, a log directory, and the port mappings given (what portmap
// gets as hostPorts). For timing the CRI calls (RunPodSandbox,
// StopPodSandbox, RemovePodSandbox) through Node.CRI.
func (n *Node) PodConfig(name string, ports ...*runtimeapi.PortMapping) *runtimeapi.PodSandboxConfig {
	uid := "uid-" + name
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: uid},
		Hostname:     name,
		LogDirectory: "/var/log/pods/default_" + name + "_" + uid,
		PortMappings: ports,
		Linux:        &runtimeapi.LinuxPodSandboxConfig{CgroupParent: n.CgroupRoot + "/pod" + uid},
	}
}

// Pod is a running pod sandbox as the CRI reports it.
type Pod struct {
	ID  string
	IP  netip.Addr // the address of its eth0, from the plugins' result
	PID int        // its pause process
}

// NetNS is the path of the pod's network namespace, through its pause
// process: containerd's pin is in the node's private /run.
func (p Pod) NetNS() string { return fmt.Sprintf("/proc/%d/ns/net", p.PID) }

// RunPod runs a pod sandbox and returns it.
func (n *Node) RunPod(t testing.TB, cfg *runtimeapi.PodSandboxConfig) Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r, err := n.CRI.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", cfg.Metadata.Name, err)
	}
	return n.Pod(t, r.PodSandboxId)
}

// Pod asks the CRI for a sandbox's status: its address and pause process.
func (n *Node) Pod(t testing.TB, id string) Pod {
	t.Helper()
	s, err := n.CRI.PodSandboxStatus(t.Context(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatalf("PodSandboxStatus %s: %v", id, err)
	}
	p := Pod{ID: id}
	if s.Status.GetNetwork().GetIp() != "" {
		if p.IP, err = netip.ParseAddr(s.Status.Network.Ip); err != nil {
			t.Fatalf("PodSandboxStatus %s: address: %v", id, err)
		}
	}
	var info struct{ Pid int }
	if err := json.Unmarshal([]byte(s.Info["info"]), &info); err != nil || info.Pid == 0 {
		t.Fatalf("PodSandboxStatus %s: no pause pid in its verbose info (%v): %q", id, err, s.Info["info"])
	}
	p.PID = info.Pid
	return p
}

// RemovePod stops and removes a pod sandbox: the plugins' DEL runs at the
// stop.
func (n *Node) RemovePod(t testing.TB, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := n.CRI.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("StopPodSandbox %s: %v", id, err)
	}
	if _, err := n.CRI.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("RemovePodSandbox %s: %v", id, err)
	}
}

// PodOf returns the ready sandbox of the Kubernetes pod namespace/name that
// kubelet runs on the node, found by the labels kubelet gives it.
func (n *Node) PodOf(t testing.TB, namespace, name string) Pod {
	t.Helper()
	list, err := n.CRI.ListPodSandbox(t.Context(), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{"io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.name": name},
	}})
	if err != nil {
		t.Fatalf("ListPodSandbox: %v", err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("pod %s/%s: %d ready sandboxes on node %s, want 1", namespace, name, len(list.Items), n.NS.Name)
	}
	return n.Pod(t, list.Items[0].Id)
}

// PodTimes are how long the CRI took for each call of one pod sandbox's
// life: the plugins' ADD runs in Run, their DEL in Stop.
type PodTimes struct {
	Run, Stop, Remove time.Duration
}

// CyclePod runs a pod sandbox with cfg (PodConfig), stops and removes it,
// timing each call, for the bench's CRI row; it takes no testing.TB, so
// that goroutines may call it at once. A failed call ends the cycle,
// leaving the sandbox to the node's end.
func (n *Node) CyclePod(ctx context.Context, cfg *runtimeapi.PodSandboxConfig) (PodTimes, error) {
	var pt PodTimes
	start := time.Now()
	r, err := n.CRI.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return pt, fmt.Errorf("RunPodSandbox %s: %w", cfg.Metadata.Name, err)
	}
	pt.Run = time.Since(start)
	start = time.Now()
	if _, err := n.CRI.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: r.PodSandboxId}); err != nil {
		return pt, fmt.Errorf("StopPodSandbox %s: %w", cfg.Metadata.Name, err)
	}
	pt.Stop = time.Since(start)
	start = time.Now()
	if _, err := n.CRI.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: r.PodSandboxId}); err != nil {
		return pt, fmt.Errorf("RemovePodSandbox %s: %w", cfg.Metadata.Name, err)
	}
	pt.Remove = time.Since(start)
	return pt, nil
}
