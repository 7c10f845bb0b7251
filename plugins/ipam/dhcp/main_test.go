package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/proc"
	"github.com/cnisuite/cni/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// status runs the built plugin's STATUS and returns its stdout and exit error.
func status(bin, socket string) (string, error) {
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND=STATUS", "CNI_PATH=/nonexistent")
	cmd.Stdin = strings.NewReader(`{"cniVersion": "1.1.0", "name": "n", "type": "dhcp", "ipam": {"type": "dhcp", "daemonSocketPath": "` + socket + `"}}`)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	return out.String(), err
}

// TestDaemon: `dhcp daemon` writes its pidfile and serves (STATUS passes, a
// second daemon on its socket is refused); SIGTERM removes the socket and
// the pidfile, and STATUS is then code 50 saying to start it. No lease is
// asked for, so the daemon touches no network.
func TestDaemon(t *testing.T) {
	bin := filepath.Join(testutil.Plugins(t, "plugins/ipam/dhcp"), "dhcp")
	dir := t.TempDir()
	socket, pidfile := filepath.Join(dir, "dhcp.sock"), filepath.Join(dir, "dhcp.pid")
	d := exec.Command(bin, "daemon", "-socketpath", socket, "-pidfile", pidfile, "-statedir", filepath.Join(dir, "state"))
	stderr, err := d.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Stop(d, 5*time.Second) })
	if sc := bufio.NewScanner(stderr); !sc.Scan() || !strings.Contains(sc.Text(), "serving") {
		t.Fatalf("the daemon did not start: %q", sc.Text())
	}
	if b, _ := os.ReadFile(pidfile); string(b) != strconv.Itoa(d.Process.Pid) {
		t.Errorf("pidfile holds %q, want %d", b, d.Process.Pid)
	}
	if out, err := status(bin, socket); err != nil {
		t.Errorf("STATUS with the daemon up: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "daemon", "-socketpath", socket, "-statedir", filepath.Join(dir, "state")).CombinedOutput(); err == nil || !strings.Contains(string(out), "already listens") {
		t.Errorf("a second daemon on the socket: %v\n%s", err, out)
	}
	proc.Stop(d, 5*time.Second)
	for _, p := range []string{socket, pidfile} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is left after SIGTERM: %v", p, err)
		}
	}
	out, err := status(bin, socket)
	var res struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if err == nil || json.Unmarshal([]byte(out), &res) != nil || res.Code != 50 || !strings.Contains(res.Msg, "dhcp daemon") {
		t.Errorf("STATUS with the daemon down: %v\n%s", err, out)
	}
}
