// Package crilab measures the plugins under containerd's CRI, the way
// kubelet drives them: pod sandboxes run, stopped and removed through
// containerd (test/kube's node), with the reference plugins on one node and
// ours on another, pod by pod alternating which side goes first.
//
// The lab is a test, TestCRILab, because test/kube's fixture takes a
// testing.TB: Run builds it with `go test -c`, runs it with a Request and
// reads back its Result. Without a request (a plain `go test`), it skips.
package crilab

import (
	"context"
	"path/filepath"

	"github.com/cnisuite/cni/bench/labkit"
)

// EnvRequest names the environment variable holding the path of the
// Request's JSON file.
const EnvRequest = "CNIBENCH_CRILAB"

// Side is one set of plugins: containerd's bin_dir on its node.
type Side struct {
	Name      string
	PluginDir string
}

// Request says what TestCRILab measures.
type Request struct {
	Sides []Side
	Pods  int    // pod sandboxes per side, each run, stopped and removed
	Dir   string // logs, images and the nodes' files
	Out   string // where the Result goes
}

// Cycle is one kind of pod's times, per pod, in ms: RunPodSandbox (the
// plugins' ADD runs in it), StopPodSandbox (their DEL), RemovePodSandbox.
type Cycle struct {
	Run, Stop, Remove []float64
}

// Times are one side's: pods without a hostPort, as most are, and pods
// with one (portmap then has rules to write and delete).
type Times struct {
	Name            string
	Plain, HostPort Cycle
}

// HostPort is the hostPort of the pods that have one (to the container's
// port 8080); the pods run one at a time, so one port serves them all.
const HostPort = 30080

// Result is every side's times, in the Request's order.
type Result struct {
	Sides []Times
}

// Conflist is what both sides' containerd loads: the chain of a pod
// network on a bridge, as the reference's own examples write it.
const Conflist = `{"cniVersion":"1.0.0","name":"cri-bench","plugins":[
  {"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,
   "ipam":{"type":"host-local","ranges":[[{"subnet":"10.87.0.0/16"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
  {"type":"portmap","capabilities":{"portMappings":true}}]}`

// Run builds the lab from the module at repo and runs it with req; its
// files and log go under dir. Interrupting ctx makes the lab clean up.
func Run(ctx context.Context, repo, dir string, req Request) (Result, error) {
	req.Dir, req.Out = dir, filepath.Join(dir, "result.json")
	var res Result
	lab := labkit.TestLab{Repo: repo, Pkg: "./bench/crilab", Test: "TestCRILab", EnvVar: EnvRequest}
	return res, lab.Run(ctx, dir, req, &res, req.Out)
}
