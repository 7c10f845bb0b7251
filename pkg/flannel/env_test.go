package flannel

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

func confWith(t *testing.T, extra map[string]any) *NetConf {
	t.Helper()
	c, err := loadConf(confJSON(t, extra))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func codeOf(err error) uint {
	var ne *netconf.Error
	if errors.As(err, &ne) {
		return ne.Code
	}
	return 0
}

// TestWaitEnvMissing: after the wait, code 11 with a message that names the
// file, this node's daemon, how to check it, and warns against copying.
func TestWaitEnvMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	c := confWith(t, map[string]any{"subnetFile": path, "subnetFileWait": "200ms"})
	start := time.Now()
	_, err := waitEnv(context.Background(), c)
	if took := time.Since(start); took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("waited %v, want about 200ms", took)
	}
	if codeOf(err) != 11 {
		t.Fatalf("err = %v, want code 11", err)
	}
	for _, want := range []string{path, "THIS node", "systemctl status subnetd", "kubectl -n kube-flannel get pods -o wide", "/readyz", "Never copy subnet.env from another node"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message lacks %q: %v", want, err)
		}
	}
}

// TestWaitEnvAppears: a subnet.env written during the wait is used at once.
func TestWaitEnvAppears(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	c := confWith(t, map[string]any{"subnetFile": path, "subnetFileWait": "10s"})
	go func() {
		time.Sleep(150 * time.Millisecond)
		_ = os.WriteFile(path, []byte(v4Env), 0o644)
	}()
	start := time.Now()
	e, err := waitEnv(context.Background(), c)
	if err != nil || e.Subnet.String() != "10.244.3.1/24" {
		t.Fatalf("waitEnv = %+v, %v", e, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v to notice the file", took)
	}
}

func TestWaitEnvCancelled(t *testing.T) {
	c := confWith(t, map[string]any{"subnetFile": filepath.Join(t.TempDir(), "none"), "subnetFileWait": "1m"})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := waitEnv(ctx, c); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
}

func TestReadEnvErrors(t *testing.T) {
	tests := []struct {
		name, content string
		code          uint
		says          string
	}{
		{"malformed", "FLANNEL_SUBNET=10.244.3.1\n", 6, "line 1"},
		{"no subnet", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", 6, "FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET"},
		{"no network", "FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", 6, "FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK"},
		{"no mtu", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n", 6, "FLANNEL_MTU"},
		{"empty", "", 6, "FLANNEL_SUBNET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "subnet.env")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := waitEnv(context.Background(), confWith(t, map[string]any{"subnetFile": path, "subnetFileWait": "0s"}))
			if codeOf(err) != tt.code || !strings.Contains(err.Error(), tt.says) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want code %d saying %q and the path", err, tt.code, tt.says)
			}
		})
	}
}

// TestWaitEnvNotAFile: a subnetFile naming a FIFO, a device or a directory,
// or a file too long to be subnet.env, fails with code 6 once the wait is
// over, never blocking on it or reading it without end.
func TestWaitEnvNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(v4Env+strings.Repeat("\n", envfile.MaxSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, says := range map[string]string{fifo: "a FIFO", "/dev/zero": "a character device", dir: "a directory", big: "over 65536 bytes"} {
		c := confWith(t, map[string]any{"subnetFile": path, "subnetFileWait": "300ms"})
		start := time.Now()
		_, err := waitEnv(context.Background(), c)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: took %v, want about the 300ms wait", path, took)
		}
		if codeOf(err) != 6 || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), says) {
			t.Errorf("%s: err = %v, want code 6 saying %q", path, err, says)
		}
	}
}

func TestReadEnvTolerant(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	content := "# by hand\nexport FLANNEL_NETWORK=\"10.244.0.0/16\"\nFLANNEL_SUBNET='10.244.3.1/24'\nFLANNEL_MTU=1450 # overlay\nFLANNEL_IPMASQ=true\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := readEnv(confWith(t, map[string]any{"subnetFile": path}))
	if err != nil || e != testEnv(t, v4Env) {
		t.Fatalf("readEnv = %+v, %v", e, err)
	}
}
