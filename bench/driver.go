package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cnisuite/cni/pkg/netns"
)

// recorder is the invoke.Exec that libcni runs the plugins through. It does
// what libcni's own RawExec does (stdin, environment, the error JSON on
// stdout); while rssTool is set it also measures each invocation's peak RSS.
type recorder struct {
	mu      sync.Mutex
	rssTool string    // GNU time while measuring memory, "" while timing
	rss     []float64 // KiB, one per plugin invocation
}

var _ invoke.Exec = (*recorder)(nil)

func (r *recorder) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	r.mu.Lock()
	tool := r.rssTool
	r.mu.Unlock()
	if tool != "" {
		out, kib, err := runWithRSS(ctx, tool, path, stdin, environ)
		if kib > 0 {
			r.mu.Lock()
			r.rss = append(r.rss, kib)
			r.mu.Unlock()
		}
		return out, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// runWithRSS runs a plugin under GNU time and returns its stdout and peak
// resident set size in KiB. wait4 cannot give that directly: Go starts
// children with vfork, and the kernel folds the parent's peak (the bench's)
// into the child's when it execs. GNU time forks from a 1 MiB process, so the
// figure is the plugin's own, delegates it waited for included.
func runWithRSS(ctx context.Context, tool, path string, stdin []byte, environ []string) ([]byte, float64, error) {
	f, err := os.CreateTemp("", "cnibench-rss-")
	if err != nil {
		return nil, 0, err
	}
	f.Close()
	defer os.Remove(f.Name())
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-q", "-f", "%M", "-o", f.Name(), path)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	runErr := cmd.Run()
	raw, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, 0, err
	}
	fields := strings.Fields(string(raw))
	var kib float64
	if len(fields) > 0 {
		kib, _ = strconv.ParseFloat(fields[len(fields)-1], 64)
	}
	if runErr != nil {
		return nil, kib, pluginError(runErr, stdout.Bytes(), stderr.Bytes())
	}
	if kib == 0 {
		return nil, 0, fmt.Errorf("%s printed no peak RSS for %s: %q", tool, path, raw)
	}
	return stdout.Bytes(), kib, nil
}

// setRSSTool switches between timing (tool "") and measuring memory.
func (r *recorder) setRSSTool(tool string) {
	r.mu.Lock()
	r.rssTool = tool
	r.mu.Unlock()
}

// pluginError turns a failed invocation into the CNI error it printed, or
// into one that quotes stderr when it printed none.
func pluginError(err error, stdout, stderr []byte) error {
	var e types.Error
	if json.Unmarshal(stdout, &e) == nil && e.Msg != "" {
		return &e
	}
	return fmt.Errorf("plugin failed: %w: stdout %q, stderr %q", err, stdout, stderr)
}

func (r *recorder) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (r *recorder) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// takeRSS returns the samples gathered so far and starts afresh.
func (r *recorder) takeRSS() []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.rss
	r.rss = nil
	return s
}

// verb is one CNI operation on one pod.
type verb int

const (
	verbAdd verb = iota
	verbCheck
	verbDel
)

func (v verb) String() string { return [...]string{"ADD", "CHECK", "DEL"}[v] }

// chain drives one conflist on one side's node, like a runtime: libcni in
// the node namespace, with its cache in a temporary directory.
type chain struct {
	cni     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	node    *namespace
	rec     *recorder
	capArgs func(pod int) map[string]any // runtime capabilities (port mappings); nil for none
}

func newChain(s side, node *namespace, conf []byte, cacheDir string, capArgs func(int) map[string]any) (*chain, error) {
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		return nil, fmt.Errorf("the bench's conflist: %w", err)
	}
	rec := &recorder{}
	return &chain{
		cni:  libcni.NewCNIConfigWithCacheDir([]string{s.dir}, cacheDir, rec),
		list: list, node: node, rec: rec, capArgs: capArgs,
	}, nil
}

// do runs one verb for the pod with the given index and container ID and
// returns how long libcni took, all plugins of the chain included.
func (c *chain) do(ctx context.Context, v verb, pod *namespace, index int, id string) (time.Duration, error) {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: pod.path, IfName: "eth0"}
	if c.capArgs != nil {
		rt.CapabilityArgs = c.capArgs(index)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var took time.Duration
	err := netns.Do(c.node.path, func() error {
		start := time.Now()
		var err error
		switch v {
		case verbAdd:
			_, err = c.cni.AddNetworkList(ctx, c.list, rt)
		case verbCheck:
			err = c.cni.CheckNetworkList(ctx, c.list, rt)
		case verbDel:
			err = c.cni.DelNetworkList(ctx, c.list, rt)
		}
		took = time.Since(start)
		return err
	})
	if err != nil {
		return took, fmt.Errorf("%s of pod %s (%s): %w", v, id, pod.name, err)
	}
	return took, nil
}

// timed runs cmd and returns its wall time from start to exit; a failure
// quotes what it printed.
func timed(cmd *exec.Cmd) (time.Duration, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("%w: stdout %q, stderr %q", err, stdout.Bytes(), stderr.Bytes())
	}
	return took, nil
}
