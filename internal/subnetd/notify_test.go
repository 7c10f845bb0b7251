package subnetd

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestSdNotify: the state reaches the socket $NOTIFY_SOCKET names, a path
// or an abstract name ('@'); without the variable nothing is sent, and a
// socket nobody listens at is an error.
func TestSdNotify(t *testing.T) {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@subnetd-test-" + hex.EncodeToString(b)} {
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		t.Setenv("NOTIFY_SOCKET", name)
		if err := sdNotify("READY=1"); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		buf := make([]byte, 64)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != "READY=1" {
			t.Fatalf("%s received %q, %v; want READY=1", name, buf[:n], err)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody"))
	if err := sdNotify("READY=1"); err == nil {
		t.Fatal("no error for a socket nobody listens at")
	}
}
