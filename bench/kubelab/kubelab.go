// Package kubelab measures lease daemons in the Kubernetes API mode
// (flanneld's --kube-subnet-mgr, subnetd's too) against one real
// kube-apiserver: test/kube's control plane in an underlay namespace, each
// daemon alone on a node namespace joined to it, one daemon after the other.
//
// The lab itself is a test, TestKubeLab, because test/kube's fixture takes
// a testing.TB and must stay out of non-test code: Run builds it with `go
// test -c`, runs it with a Request and reads back its Result. Without a
// request (a plain `go test`), TestKubeLab skips.
package kubelab

import (
	"context"
	"path/filepath"

	"github.com/cnisuite/cni/bench/labkit"
)

// EnvRequest names the environment variable holding the path of the
// Request's JSON file.
const EnvRequest = "CNIBENCH_KUBELAB"

// Daemon is one lease daemon to measure.
type Daemon struct {
	Name string // "flanneld" or "subnetd": how it is started
	Bin  string
}

// Request says what TestKubeLab measures.
type Request struct {
	Daemons []Daemon // measured in this order, each phase
	Events  int      // new Nodes timed one by one on a running node
	Nodes   []int    // Nodes in the API before each start, ascending
	Dir     string   // logs and the daemons' files
	Out     string   // where the Result goes
}

// Figures are one daemon's.
type Figures struct {
	Name string
	// Per new Node, ms: from the start of its create to the last of its
	// route, neighbour and FDB entry (Event), to the create's return
	// (Create), to the bench's own watch event (Seen); Share is Event
	// minus Seen: the daemon's part after the API server's watch.
	Event, Create, Seen, Share []float64
	// When the bench's watch saw each new Node and when its last entry
	// appeared (µs since the epoch), and the daemon's log then: subnetd's
	// debug lines time its own steps on the same clock.
	SeenUS, LastUS []int64
	EventLog       string
	Start          []float64 // s from the daemon's start to the last peer's last entry, per Request.Nodes
	RSSKiB         float64   // VmRSS after the new Nodes
	HWMKiB         float64   // VmHWM after the largest start
}

// Result is every daemon's figures, in the Request's order.
type Result struct {
	Daemons []Figures
}

// Run builds the lab from the module at repo and runs it with req; its
// files and log go under dir. Interrupting ctx makes the lab clean up.
func Run(ctx context.Context, repo, dir string, req Request) (Result, error) {
	req.Dir, req.Out = dir, filepath.Join(dir, "result.json")
	var res Result
	lab := labkit.TestLab{Repo: repo, Pkg: "./bench/kubelab", Test: "TestKubeLab", EnvVar: EnvRequest}
	return res, lab.Run(ctx, dir, req, &res, req.Out)
}
