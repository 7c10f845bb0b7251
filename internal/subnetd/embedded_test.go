package subnetd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeServer puts a script named subnetd-etcd first in PATH, standing in
// for the real one (tested in internal/subnetd/etcdchild) to test the contract:
// "ready" on stdout, stop at end of stdin. It records its arguments and
// whether it saw end of stdin.
func fakeServer(t *testing.T, body string) (dir string) {
	t.Helper()
	dir = t.TempDir()
	script := "#!/bin/sh\necho \"$@\" > " + filepath.Join(dir, "args") + "\n" + body + "\n"
	if err := os.WriteFile(filepath.Join(dir, etcdServerName), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return dir
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestEmbeddedChild(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		timeout    time.Duration
		wantErr    string // "" means it starts
	}{
		{"ready then stops at end of stdin", "echo ready; cat >/dev/null; touch $(dirname $0)/stopped", time.Minute, ""},
		{"exits before ready", "echo 'member failed' >&2; exit 3", time.Minute, "exited before serving (exit status 3)"},
		{"says something else", "echo hello; exit 0", time.Minute, "exited before serving"},
		{"never ready", "cat >/dev/null", 300 * time.Millisecond, "not serving after 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := fakeServer(t, tc.body)
			c, err := startEmbedded(filepath.Join(dir, "data"), "127.0.0.1:1", "127.0.0.1:2", tc.timeout, quietLog)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			args, _ := os.ReadFile(filepath.Join(dir, "args"))
			if want := "--data-dir " + filepath.Join(dir, "data") + " --client-url http://127.0.0.1:1 --peer-url http://127.0.0.1:2"; !strings.HasPrefix(string(args), want) {
				t.Fatalf("arguments %q, want them to start with %q", args, want)
			}
			var logged bytes.Buffer
			c.stop(time.Minute, slog.New(slog.NewTextHandler(&logged, nil)))
			if _, err := os.Stat(filepath.Join(dir, "stopped")); err != nil {
				t.Fatalf("the child did not see the end of its stdin before exiting: %v", err)
			}
			if n := strings.Count(logged.String(), "\n"); n != 1 || !strings.Contains(logged.String(), `msg="the embedded etcd stopped"`) {
				t.Fatalf("logged at the stop:\n%s\nwant one line saying it stopped", logged.String())
			}
		})
	}
}

// TestEmbeddedKilled: a child that ignores the end of its stdin is killed
// after the grace period.
func TestEmbeddedKilled(t *testing.T) {
	fakeServer(t, "echo ready; exec sleep 60")
	c, err := startEmbedded(t.TempDir(), "127.0.0.1:1", "127.0.0.1:2", time.Minute, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.stop(200*time.Millisecond, quietLog)
	if took := time.Since(start); took > 5*time.Second || c.cmd.ProcessState == nil || c.cmd.ProcessState.Success() {
		t.Fatalf("stop took %v and left %v; want the child killed after the grace period", took, c.cmd.ProcessState)
	}
}

// TestEmbeddedAddressTaken: something listening at the embedded etcd's
// client address (an etcd flanneld used there by default) is refused
// before the child starts, saying to pass --etcd-endpoints.
func TestEmbeddedAddressTaken(t *testing.T) {
	dir := fakeServer(t, "echo ready; cat >/dev/null")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = startEmbedded(filepath.Join(dir, "data"), l.Addr().String(), "127.0.0.1:2", time.Minute, quietLog)
	if want := "--etcd-endpoints=http://" + l.Addr().String(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one saying %s", err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "args")); err == nil {
		t.Fatal("the child was started")
	}
}

func TestEmbeddedMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := startEmbedded(t.TempDir(), "127.0.0.1:1", "127.0.0.1:2", time.Second, quietLog)
	if err == nil || !strings.Contains(err.Error(), "--etcd-endpoints") || !strings.Contains(err.Error(), etcdServerName) {
		t.Fatalf("error %v, want one naming %s and --etcd-endpoints", err, etcdServerName)
	}
}

// TestEmbeddedDeathEndsDaemon: the embedded etcd dying cancels the daemon
// with errEmbeddedExited; a stop asked for does not.
func TestEmbeddedDeathEndsDaemon(t *testing.T) {
	fakeServer(t, "echo ready; cat >/dev/null")
	cfg := &Config{EmbeddedClient: "127.0.0.1:1", EmbeddedPeer: "127.0.0.1:2", DataDir: t.TempDir(), LeaseTTL: time.Hour, EtcdTimeout: time.Second}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	_, closeReg, err := openRegistry(cfg, quietLog, cancel)
	if err != nil {
		t.Fatal(err)
	}
	closeReg()
	time.Sleep(100 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatalf("a stop asked for cancelled the daemon: %v", context.Cause(ctx))
	}

	fakeServer(t, "echo ready; sleep 0.2; exit 4")
	ctx, cancel = context.WithCancelCause(context.Background())
	defer cancel(nil)
	_, closeReg, err = openRegistry(cfg, quietLog, cancel)
	if err != nil {
		t.Fatal(err)
	}
	defer closeReg()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon was not told that its etcd exited")
	}
	if err := context.Cause(ctx); !errors.Is(err, errEmbeddedExited) || !strings.Contains(err.Error(), "exit status 4") {
		t.Fatalf("cause %v, want errEmbeddedExited with the exit status", err)
	}
}
