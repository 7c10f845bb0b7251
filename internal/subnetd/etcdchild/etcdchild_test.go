package etcdchild

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets TestQuietStop run this binary as subnetd-etcd itself.
func TestMain(m *testing.M) {
	if os.Getenv("SUBNETD_ETCD_RUN_MAIN") == "1" {
		os.Exit(Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestValidate(t *testing.T) {
	ok := options{dataDir: "/var/lib/subnetd/etcd", clientURL: "http://127.0.0.1:2379", peerURL: "http://[::1]:2380"}
	for _, tc := range []struct {
		name    string
		change  func(*options)
		wantErr string
	}{
		{"loopback", func(*options) {}, ""},
		{"no data dir", func(o *options) { o.dataDir = "" }, "--data-dir"},
		{"client on all addresses", func(o *options) { o.clientURL = "http://0.0.0.0:2379" }, "--client-url"},
		{"peer on a host address", func(o *options) { o.peerURL = "http://192.168.1.5:2380" }, "--peer-url"},
		{"host name", func(o *options) { o.clientURL = "http://localhost:2379" }, "LOOPBACK-ADDRESS"},
		{"https", func(o *options) { o.clientURL = "https://127.0.0.1:2379" }, "--client-url"},
		{"no port", func(o *options) { o.clientURL = "http://127.0.0.1" }, "--client-url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.change(&o)
			err := o.validate()
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("validate: %v, want an error saying %q", err, tc.wantErr)
			}
		})
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRun: the member serves once "ready" is printed, and run returns when
// the parent closes stdin.
func TestRun(t *testing.T) {
	client := freePort(t)
	o := options{dataDir: filepath.Join(t.TempDir(), "etcd"), clientURL: "http://" + client, peerURL: "http://" + freePort(t), timeout: time.Minute}
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), o, stdinR, stdoutW) }()
	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("first line %q, %v; want ready", line, err)
	}
	resp, err := http.Get("http://" + client + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"health":"true"`) {
		t.Fatalf("/health: %d %s", resp.StatusCode, body)
	}
	stdinW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after its stdin was closed")
	}
	if _, err := os.Stat(filepath.Join(o.dataDir, "member")); err != nil {
		t.Fatalf("no member data: %v", err)
	}
	if c, err := net.DialTimeout("tcp", client, time.Second); err == nil {
		c.Close()
		t.Fatal("the member still serves after run returned")
	}
}

// TestQuietStop: the member stopped by its parent (end of stdin) writes
// nothing on stderr, where subnetd's log is: etcd's serving goroutines log
// their closed listeners as errors with stack traces unless told it is the
// stop (etcd-io/etcd#17424).
func TestQuietStop(t *testing.T) {
	cmd := exec.Command(os.Args[0], "--data-dir", filepath.Join(t.TempDir(), "etcd"),
		"--client-url", "http://"+freePort(t), "--peer-url", "http://"+freePort(t))
	cmd.Env = append(os.Environ(), "SUBNETD_ETCD_RUN_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Fatalf("first line %q, %v; want ready; stderr:\n%s", line, err, stderr.String())
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Fatalf("the stop logged:\n%s", stderr.String())
	}
}
