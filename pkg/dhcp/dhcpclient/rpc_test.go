package dhcpclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/rpc"
	"path/filepath"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
)

// TestDaemonDown: with no daemon on the socket, STATUS and ADD fail at once
// with code 50, saying to start it; with a daemon that accepts but never
// answers, ADD fails after the handshake's timeout instead of hanging.
func TestDaemonDown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dhcp.sock")
	conf := []byte(`{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", "daemonSocketPath": "` + sock + `"}}`)
	a := &cniplugin.Args{Command: "ADD", ContainerID: "c1", Netns: "/run/netns/x", IfName: "eth0", StdinData: conf}
	_, addErr := Plugin{}.Add(context.Background(), a)
	for verb, err := range map[string]error{"ADD": addErr, "STATUS": Plugin{}.Status(context.Background(), a)} {
		ce := cniplugin.ToCNIError(err)
		if ce == nil || ce.Code != netconf.CodeUnavailable || !strings.Contains(ce.Msg, "dhcp daemon") || !strings.Contains(ce.Msg, sock) {
			t.Errorf("%s with the daemon down: %v, want code 50 saying to start `dhcp daemon` on %s", verb, ce, sock)
		}
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for c, err := l.Accept(); err == nil; c, err = l.Accept() {
			defer c.Close() // held, never answered
		}
	}()
	defer func(d time.Duration) { handshakeTimeout = d }(handshakeTimeout)
	handshakeTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err = Plugin{}.Add(context.Background(), a)
	var ne *netconf.Error
	if !errors.As(err, &ne) || ne.Code != netconf.CodeUnavailable || time.Since(start) > 5*time.Second {
		t.Errorf("ADD against a daemon that does not answer: %v after %s, want code 50 within the timeout", err, time.Since(start))
	}
}

// refDaemon answers as the reference plugins' daemon does: Allocate and
// Release only, its arguments decoded from the fields of skel.CmdArgs.
type refDaemon struct{ got chan RefArgs }

// RefArgs is exported, as net/rpc wants of argument types.
type RefArgs struct {
	ContainerID, Netns, IfName, Args, Path string
	StdinData                              []byte
}

func (r *refDaemon) Allocate(a *RefArgs, res *current.Result) error {
	r.got <- *a
	_, ipn, _ := net.ParseCIDR("10.1.0.5/24")
	ipn.IP = net.ParseIP("10.1.0.5").To4()
	res.IPs = []*current.IPConfig{{Address: *ipn, Gateway: net.ParseIP("10.1.0.1").To4()}}
	return nil
}

func (r *refDaemon) Release(a *RefArgs, _ *struct{}) error { r.got <- *a; return nil }

// TestReferenceDaemon: the plugin speaks the reference daemon's protocol
// (ADD and DEL answered, the attachment passed by field name), and says
// what to run for the verbs that daemon lacks.
func TestReferenceDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dhcp.sock")
	srv := rpc.NewServer()
	ref := &refDaemon{got: make(chan RefArgs, 2)}
	if err := srv.RegisterName("DHCP", ref); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { _ = http.Serve(l, srv) }()
	conf := []byte(`{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", "daemonSocketPath": "` + sock + `"}}`)
	a := &cniplugin.Args{Command: "ADD", ContainerID: "c1", Netns: "/run/netns/x", IfName: "eth0", Args: "K=V", StdinData: conf}
	res, err := Plugin{}.Add(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.(*current.Result).IPs[0].Address.String(); got != "10.1.0.5/24" {
		t.Errorf("ADD gave %s", got)
	}
	if got := <-ref.got; got.ContainerID != "c1" || got.Netns != "/run/netns/x" || got.IfName != "eth0" || got.Args != "K=V" || string(got.StdinData) != string(conf) {
		t.Errorf("the daemon got %+v", got)
	}
	if err := (Plugin{}).Del(context.Background(), a); err != nil {
		t.Errorf("DEL: %v", err)
	}
	<-ref.got
	if err := (Plugin{}).GC(context.Background(), a); err == nil || !strings.Contains(err.Error(), "run this suite's `dhcp daemon`") {
		t.Errorf("GC against the reference daemon: %v", err)
	}
}
