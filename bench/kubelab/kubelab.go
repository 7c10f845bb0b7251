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
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
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
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, err
	}
	bin := filepath.Join(dir, "kubelab.test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "./bench/kubelab")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return Result{}, fmt.Errorf("building the kube lab: %w\n%s", err, out)
	}
	req.Dir, req.Out = dir, filepath.Join(dir, "result.json")
	reqFile := filepath.Join(dir, "request.json")
	if err := writeJSON(reqFile, req); err != nil {
		return Result{}, err
	}
	logFile := filepath.Join(dir, "kubelab.log")
	log, err := os.Create(logFile)
	if err != nil {
		return Result{}, err
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, bin, "-test.run", "^TestKubeLab$", "-test.v", "-test.timeout", "60m")
	// test/kube finds the Kubernetes binaries' build script from the
	// module of its working directory.
	cmd.Dir = filepath.Join(repo, "bench", "kubelab")
	cmd.Env = append(os.Environ(), EnvRequest+"="+reqFile)
	cmd.Stdout, cmd.Stderr = log, log
	// SIGTERM, not SIGKILL: the lab then ends its processes and deletes its namespaces.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 2 * time.Minute
	runErr := cmd.Run()
	var res Result
	raw, err := os.ReadFile(req.Out)
	if err == nil {
		err = json.Unmarshal(raw, &res)
	}
	if runErr != nil || err != nil {
		return res, fmt.Errorf("the kube lab: %w; the end of its log (%s):\n%s", errors.Join(runErr, err), logFile, tail(logFile, 30))
	}
	return res, nil
}

func writeJSON(path string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	raw, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
