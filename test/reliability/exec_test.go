package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// call is one run of a plugin binary inside a node namespace, the way a
// runtime runs it.
type call struct {
	plugin, cmd string
	stdin       []byte
	node        *netnstest.NS
	netns       string // CNI_NETNS
	containerID string
	ifname      string
	umask       int      // applied while the plugin starts; -1 keeps the test's
	dir         string   // working directory; "" keeps the test's
	env         []string // added to the environment
	wrap        []string // runs "ip netns exec" through this (nsenter into a mount namespace)
}

type outcome struct {
	exit           int
	stdout, stderr string
}

// umaskMu serialises umask changes: the umask is the whole process's.
var umaskMu sync.Mutex

func (c call) run(t *testing.T) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	argv := append(c.wrap, "ip", "netns", "exec", c.node.Name, filepath.Join(binDir, c.plugin))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + c.cmd, "CNI_CONTAINERID=" + c.containerID,
		"CNI_NETNS=" + c.netns, "CNI_IFNAME=" + c.ifname, "CNI_PATH=" + binDir,
	}
	cmd.Env = append(cmd.Env, c.env...)
	cmd.Stdin = bytes.NewReader(c.stdin)
	cmd.Dir = c.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := c.start(cmd); err != nil {
		t.Fatalf("starting %s: %v", c.plugin, err)
	}
	err := cmd.Wait()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("running %s %s: %v", c.plugin, c.cmd, err)
	}
	o := outcome{exit: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	for _, marker := range []string{"panic:", "goroutine ", "fatal error:"} {
		if strings.Contains(o.stdout+o.stderr, marker) {
			t.Fatalf("%s %s crashed:\nstdout: %s\nstderr: %s", c.plugin, c.cmd, o.stdout, o.stderr)
		}
	}
	return o
}

func (c call) start(cmd *exec.Cmd) error {
	if c.umask < 0 {
		return cmd.Start()
	}
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := syscall.Umask(c.umask)
	defer syscall.Umask(old)
	return cmd.Start()
}

func (o outcome) ok(t *testing.T, what string) {
	t.Helper()
	if o.exit != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, o.exit, o.stdout, o.stderr)
	}
}

// code is the CNI error code of a failed call, or 0 when it succeeded.
func (o outcome) code(t *testing.T) uint {
	t.Helper()
	if o.exit == 0 {
		return 0
	}
	var e struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.Unmarshal([]byte(o.stdout), &e); err != nil || e.Code == 0 || e.Msg == "" {
		t.Fatalf("exit %d without a CNI error object (%v):\nstdout: %s\nstderr: %s", o.exit, err, o.stdout, o.stderr)
	}
	return e.Code
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// flannelConf is the flannel plugin's configuration with its state under
// dir: subnet.env, the saved delegate configurations in dir/flannel and
// host-local's reservations in dir/ipam.
func flannelConf(t *testing.T, dir, network string) map[string]any {
	t.Helper()
	env := filepath.Join(dir, "subnet.env")
	writeFile(t, env, "FLANNEL_NETWORK=10.98.0.0/16\nFLANNEL_SUBNET=10.98.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
	return map[string]any{
		"cniVersion": "1.1.0", "name": network, "type": "flannel",
		"subnetFile": env, "dataDir": filepath.Join(dir, "flannel"),
		"ipam": map[string]any{"dataDir": filepath.Join(dir, "ipam")},
	}
}
