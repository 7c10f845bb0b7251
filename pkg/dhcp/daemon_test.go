package dhcp

import (
	"bufio"
	"context"
	"net"
	"net/rpc"
	"path/filepath"
	"strings"
	"testing"
)

type echo struct{}

func (echo) Echo(in *string, out *string) error { *out = *in; return nil }

// TestHandshake: the daemon answers net/rpc's HTTP client (rpc.DialHTTP,
// the reference plugin's) and refuses other HTTP requests with net/rpc's
// own 405.
func TestHandshake(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := rpc.NewServer()
	if err := srv.RegisterName("DHCP", echo{}); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{ctx: ctx}
	done := make(chan error)
	go func() { done <- d.serve(l, srv) }()
	defer func() {
		cancel()
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("serve after the end: %v", err)
		}
	}()
	c, err := rpc.DialHTTP("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out string
	for _, in := range []string{"a", "b"} { // two calls on one connection
		if err := c.Call("DHCP.Echo", &in, &out); err != nil || out != in {
			t.Fatalf("call: %q, %v", out, err)
		}
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("GET /_goRPC_ HTTP/1.1\r\nHost: x\r\n\r\n"))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/") || !strings.Contains(status, " 405 ") {
		t.Errorf("a GET was answered %q, %v", status, err)
	}
}
