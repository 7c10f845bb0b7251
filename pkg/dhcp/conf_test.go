package dhcp

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
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
)

// TestBadInput: every malformed configuration is refused with its code and
// a message naming the key, before the daemon is asked anything (the
// socket here does not exist: reaching it would be code 50).
func TestBadInput(t *testing.T) {
	sock := `"daemonSocketPath": "/nonexistent/dhcp.sock"`
	for _, tc := range []struct {
		name, conf, args string
		code             uint
		msg              string
	}{
		{"not JSON", `{`, "", netconf.CodeDecoding, "not valid JSON"},
		{"no ipam", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge"}`, "", netconf.CodeInvalidConfig, `"ipam" is required`},
		{"no name", `{"cniVersion": "1.1.0", "type": "bridge", "ipam": {"type": "dhcp"}}`, "", netconf.CodeInvalidConfig, `"name"`},
		{"relative socket", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", "daemonSocketPath": "run/dhcp.sock"}}`, "", netconf.CodeInvalidConfig, "daemonSocketPath"},
		{"socket not a string", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", "daemonSocketPath": 1}}`, "", netconf.CodeDecoding, "daemonSocketPath"},
		{"unknown option name", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", ` + sock + `, "provide": [{"option": "hostname", "value": "x"}]}}`, "", netconf.CodeInvalidConfig, "ipam.provide[0].option"},
		{"option 255", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", ` + sock + `, "request": [{"option": "255"}]}}`, "", netconf.CodeInvalidConfig, "ipam.request[0].option"},
		{"option 256", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", ` + sock + `, "request": [{"option": 256}]}}`, "", netconf.CodeInvalidConfig, "ipam.request[0].option"},
		{"empty provided option", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", ` + sock + `, "provide": [{"value": "x"}]}}`, "", netconf.CodeInvalidConfig, "ipam.provide[0].option"},
		{"value too long", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", ` + sock + `, "provide": [{"option": "host-name", "value": "` + strings.Repeat("x", 256) + `"}]}}`, "", netconf.CodeInvalidConfig, "ipam.provide[0].value"},
		{"fromArg too long", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", ` + sock + `, "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}]}}`, "K8S_POD_NAME=" + strings.Repeat("x", 256), netconf.CodeInvalidConfig, "CNI_ARGS K8S_POD_NAME"},
		{"malformed CNI_ARGS", `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", ` + sock + `}}`, "K8S_POD_NAME", netconf.CodeInvalidEnv, "CNI_ARGS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &cniplugin.Args{Command: "ADD", ContainerID: "c1", Netns: "/run/netns/x", IfName: "eth0", Args: tc.args, StdinData: []byte(tc.conf)}
			for verb, run := range map[string]func() error{
				"ADD":    func() error { _, err := Plugin{}.Add(context.Background(), a); return err },
				"DEL":    func() error { return Plugin{}.Del(context.Background(), a) },
				"STATUS": func() error { return Plugin{}.Status(context.Background(), a) },
			} {
				ce := cniplugin.ToCNIError(run())
				if ce == nil || ce.Code != tc.code || !strings.Contains(ce.Msg, tc.msg) {
					t.Errorf("%s: %v, want code %d naming %q", verb, ce, tc.code, tc.msg)
				}
			}
		})
	}
}

// TestOptions: provided values (fixed and from CNI_ARGS), the default
// request list, skipDefault, and names as numbers.
func TestOptions(t *testing.T) {
	conf := `{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp",
		"provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}, {"option": "60", "value": "cni"}],
		"request": [{"option": 121}, {"option": "subnet-mask", "skipDefault": %s}]}}`
	for _, tc := range []struct {
		skip string
		want []dhcpv4.OptionCode
	}{
		{"false", []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionClasslessStaticRoute}},
		{"true", []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionClasslessStaticRoute}},
	} {
		c, err := load([]byte(strings.Replace(conf, "%s", tc.skip, 1)), "IgnoreUnknown=1;K8S_POD_NAME=web-0")
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := dhcpv4.New()
		for _, o := range c.opts {
			msg.Options.Update(o)
		}
		if got := string(msg.Options.Get(dhcpv4.OptionHostName)); got != "web-0" {
			t.Errorf("host-name %q, want web-0", got)
		}
		if got := string(msg.Options.Get(dhcpv4.OptionClassIdentifier)); got != "cni" {
			t.Errorf("option 60 %q, want cni", got)
		}
		if got := msg.ParameterRequestList(); got.String() != dhcpv4.OptionCodeList(tc.want).String() {
			t.Errorf("skipDefault %s: requested %s, want %s", tc.skip, got, dhcpv4.OptionCodeList(tc.want))
		}
	}
}

// TestClientID is the reference's: containerID/network/ifname, at most 254 bytes.
func TestClientID(t *testing.T) {
	if got := clientID("c1", "net", "eth0"); got != "c1/net/eth0" {
		t.Errorf("clientID %q", got)
	}
	if got := clientID(strings.Repeat("a", 300), "net", "eth0"); len(got) != 254 {
		t.Errorf("long clientID has %d bytes, want 254", len(got))
	}
}

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

// FuzzLoad: no configuration or CNI_ARGS makes load panic.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", "provide": [{"option": "host-name", "fromArg": "K"}], "request": [{"option": 121, "skipDefault": true}]}}`), "K=v")
	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		_, _ = load(conf, args)
	})
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
