package dhcpclient

import (
	"context"
	"strings"
	"testing"

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

// FuzzLoad: no configuration or CNI_ARGS makes load panic.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": {"type": "dhcp", "provide": [{"option": "host-name", "fromArg": "K"}], "request": [{"option": 121, "skipDefault": true}]}}`), "K=v")
	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		_, _ = Load(conf, args)
	})
}
