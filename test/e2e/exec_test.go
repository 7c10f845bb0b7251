package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// noNetns is a CNI_NETNS that does not exist, for calls that must fail before
// the plugin looks at the container.
const noNetns = "/run/netns/cni-e2e-does-not-exist"

// pluginCall is one run of a plugin binary with the CNI environment, the way
// a runtime calls it.
type pluginCall struct {
	plugin string
	cmd    string            // CNI_COMMAND
	stdin  []byte            // the network configuration
	env    map[string]string // overrides the default CNI_* variables; "" unsets one
	node   *netnstest.NS     // when set, the plugin runs inside this namespace
}

type outcome struct {
	exit           int
	stdout, stderr string
}

func (c pluginCall) environ() []string {
	env := map[string]string{
		"PATH": os.Getenv("PATH"), "CNI_COMMAND": c.cmd, "CNI_CONTAINERID": "e2e-container",
		"CNI_NETNS": noNetns, "CNI_IFNAME": "eth0", "CNI_PATH": binDir,
	}
	maps.Copy(env, c.env)
	var out []string
	for k, v := range env {
		if v != "" {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// run executes the call; a plugin that hangs fails the test instead of the run.
func (c pluginCall) run(t *testing.T) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	argv := []string{filepath.Join(binDir, c.plugin)}
	if c.node != nil {
		argv = append([]string{"ip", "netns", "exec", c.node.Name}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = c.environ()
	cmd.Stdin = bytes.NewReader(c.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("running %s %s: %v", c.plugin, c.cmd, err)
	}
	o := outcome{exit: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	o.noCrash(t)
	return o
}

// noCrash fails on what a Go runtime prints when a plugin panics or dies.
func (o outcome) noCrash(t *testing.T) {
	t.Helper()
	for _, marker := range []string{"panic:", "goroutine ", "fatal error:"} {
		if strings.Contains(o.stdout, marker) || strings.Contains(o.stderr, marker) {
			t.Fatalf("plugin crashed (%q):\nstdout: %s\nstderr: %s", marker, o.stdout, o.stderr)
		}
	}
}

// ok fails unless the plugin succeeded.
func (o outcome) ok(t *testing.T, what string) {
	t.Helper()
	if o.exit != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, o.exit, o.stdout, o.stderr)
	}
}

// cniError is the spec's error object.
type cniError struct {
	CNIVersion string `json:"cniVersion"`
	Code       *uint  `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`
}

// failsWith checks the spec's failure contract: exit 1 and exactly one JSON
// error object on stdout with the given code, a message and the cniVersion.
func (o outcome) failsWith(t *testing.T, code uint) {
	t.Helper()
	if o.exit != 1 {
		t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", o.exit, o.stdout, o.stderr)
	}
	var e cniError
	dec := json.NewDecoder(strings.NewReader(o.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || dec.More() {
		t.Fatalf("stdout is not one CNI error object (%v):\n%s", err, o.stdout)
	}
	if e.Code == nil || *e.Code != code || e.Msg == "" || e.CNIVersion == "" {
		t.Fatalf("error %s, want code %d with a message and a cniVersion", strings.TrimSpace(o.stdout), code)
	}
}

// jsonConf marshals a configuration built as a map.
func jsonConf(t *testing.T, conf map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
