package static

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
)

var ctx = context.Background()

func conf(ipam string, extra ...string) []byte {
	s := `{"cniVersion":"1.1.0","name":"net1","type":"bridge","ipam":` + ipam
	for _, e := range extra {
		s += "," + e
	}
	return []byte(s + "}")
}

func add(t *testing.T, stdin []byte, cniArgs string) *current.Result {
	t.Helper()
	res, err := Plugin{}.Add(ctx, &cniplugin.Args{ContainerID: "c1", IfName: "eth0", StdinData: stdin, Args: cniArgs})
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	return res.(*current.Result)
}

func ips(r *current.Result) string {
	var s []string
	for _, ip := range r.IPs {
		s = append(s, ip.Address.String()+" gw "+ip.Gateway.String())
	}
	return strings.Join(s, ", ")
}

// TestAddSources: every way of naming the addresses, in the reference's
// precedence (runtimeConfig over args over configuration plus CNI_ARGS).
func TestAddSources(t *testing.T) {
	const ipam = `{"type":"static","addresses":[{"address":"10.10.0.5/24","gateway":"10.10.0.1"},{"address":"fd00::5/64"}],
		"routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.10.0.254"}],"dns":{"nameservers":["10.10.0.53"],"search":["example.com"]}}`
	for _, tc := range []struct {
		name    string
		extra   []string
		cniArgs string
		want    string
	}{
		{"configuration", nil, "", "10.10.0.5/24 gw 10.10.0.1, fd00::5/64 gw <nil>"},
		{"CNI_ARGS IP and GATEWAY add to it", nil, "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.20.0.7/16,fd01::7/64;GATEWAY=10.20.0.1,fd00::1",
			"10.10.0.5/24 gw 10.10.0.1, fd00::5/64 gw fd00::1, 10.20.0.7/16 gw 10.20.0.1, fd01::7/64 gw <nil>"},
		{"args.cni.ips replace it", []string{`"args":{"cni":{"ips":["10.30.0.3/24"]}}`}, "IP=10.20.0.7/16", "10.30.0.3/24 gw <nil>"},
		{"runtimeConfig.ips replace args", []string{`"args":{"cni":{"ips":["10.30.0.3/24"]}}`, `"runtimeConfig":{"ips":["10.40.0.4/24","fd02::4/64"]}`}, "",
			"10.40.0.4/24 gw <nil>, fd02::4/64 gw <nil>"},
	} {
		res := add(t, conf(ipam, tc.extra...), tc.cniArgs)
		if got := ips(res); got != tc.want {
			t.Errorf("%s: IPs %s, want %s", tc.name, got, tc.want)
		}
		if len(res.Routes) != 2 || res.Routes[1].GW.String() != "10.10.0.254" || res.DNS.Nameservers[0] != "10.10.0.53" || res.DNS.Search[0] != "example.com" {
			t.Errorf("%s: routes %v, DNS %+v", tc.name, res.Routes, res.DNS)
		}
	}
}

// TestSpecVersions: the result converts to every supported version; 0.3.x
// results name the family of each address.
func TestSpecVersions(t *testing.T) {
	for _, v := range cniplugin.Versions() {
		stdin := []byte(`{"cniVersion":"` + v + `","name":"n","type":"bridge","ipam":{"type":"static","addresses":[{"address":"10.10.0.5/24"},{"address":"fd00::5/64"}]}}`)
		res := add(t, stdin, "")
		conv, err := res.GetAsVersion(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		out, _ := json.Marshal(conv)
		if !strings.Contains(string(out), `"cniVersion":"`+v+`"`) || !strings.Contains(string(out), "fd00::5/64") {
			t.Errorf("%s: %s", v, out)
		}
		if strings.HasPrefix(v, "0.3") && !strings.Contains(string(out), `"version":"6"`) {
			t.Errorf("%s: no per-address version: %s", v, out)
		}
	}
}

// TestBadInput: each malformed configuration or argument is refused with
// its code and a message naming the key.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		stdin   []byte
		cniArgs string
		code    uint
		says    string
	}{
		{[]byte(`{"cniVersion":"1.1.0","name":"n","type":"bridge"}`), "", netconf.CodeInvalidConfig, `"ipam" is required`},
		{conf(`{"type":"static","addresses":[{"address":"10.10.0.5"}]}`), "", netconf.CodeInvalidConfig, "ipam.addresses[0].address"},
		{conf(`{"type":"static","addresses":[{"address":"10.10.0.5/24","gateway":"fd00::1"}]}`), "", netconf.CodeInvalidConfig, "ipam.addresses[0].gateway"},
		{conf(`{"type":"static","addresses":[{"address":"10.10.0.5/24","gateway":"x"}]}`), "", netconf.CodeInvalidConfig, "ipam.addresses[0].gateway"},
		{conf(`{"type":"static"}`), "IP=10.1.1.1", netconf.CodeInvalidEnv, "CNI_ARGS IP"},
		{conf(`{"type":"static"}`), "IP=10.1.1.1/8;GATEWAY=nope", netconf.CodeInvalidEnv, "CNI_ARGS GATEWAY"},
		{conf(`{"type":"static"}`), "IP", netconf.CodeInvalidEnv, "CNI_ARGS"},
		{conf(`{"type":"static"}`, `"runtimeConfig":{"ips":["10.1.1.1"]}`), "", netconf.CodeInvalidConfig, "runtimeConfig.ips"},
		{conf(`{"type":"static"}`, `"args":{"cni":{"ips":["a/b"]}}`), "", netconf.CodeInvalidConfig, "args.cni.ips"},
		{conf(`{"type":"static","addresses":"10.1.1.1/8"}`), "", netconf.CodeDecoding, "addresses"},
		{conf(`{"type":"static","routes":[{"dst":"default"}]}`), "", netconf.CodeInvalidConfig, "ipam.routes[0].dst"},
		{conf(`{"type":"static","routes":[{"dst":"0.0.0.0/0","gw":"fd00::1"}]}`), "", netconf.CodeInvalidConfig, "different IP families"},
	} {
		for verb, run := range map[string]func(a *cniplugin.Args) error{
			"ADD": func(a *cniplugin.Args) error { _, err := Plugin{}.Add(ctx, a); return err },
			"DEL": func(a *cniplugin.Args) error { return Plugin{}.Del(ctx, a) },
		} {
			err := run(&cniplugin.Args{ContainerID: "c1", IfName: "eth0", StdinData: tc.stdin, Args: tc.cniArgs})
			e := cniplugin.ToCNIError(err)
			if err == nil || e.Code != tc.code || !strings.Contains(e.Msg+e.Details, tc.says) {
				t.Errorf("%s %s / %q: %v (code %d), want code %d saying %q", verb, tc.stdin, tc.cniArgs, err, e.Code, tc.code, tc.says)
			}
		}
	}
}

// TestCheck: CHECK finds a configured address, or its gateway, missing
// from the prevResult, and passes on ADD's own result.
func TestCheck(t *testing.T) {
	const ipam = `{"type":"static","addresses":[{"address":"10.10.0.5/24","gateway":"10.10.0.1"}]}`
	for _, tc := range []struct{ prev, err string }{
		{`{"cniVersion":"1.1.0","ips":[{"address":"10.10.0.5/24","gateway":"10.10.0.1"}]}`, ""},
		{`{"cniVersion":"1.1.0","ips":[{"address":"10.10.0.6/24","gateway":"10.10.0.1"}]}`, "not in the prevResult"},
		{`{"cniVersion":"1.1.0","ips":[{"address":"10.10.0.5/24","gateway":"10.10.0.2"}]}`, "has gateway 10.10.0.2"},
	} {
		err := Plugin{}.Check(ctx, &cniplugin.Args{IfName: "eth0", StdinData: conf(ipam, `"prevResult":`+tc.prev)})
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("CHECK with %s: %v, want %q", tc.prev, err, tc.err)
		}
	}
	if err := (Plugin{}).Check(ctx, &cniplugin.Args{StdinData: conf(ipam)}); cniplugin.ToCNIError(err).Code != netconf.CodeInvalidConfig {
		t.Errorf("CHECK without a prevResult: %v, want code 7", err)
	}
}

// TestNoState: DEL, GC and STATUS succeed on a valid configuration, every
// time, since static keeps nothing.
func TestNoState(t *testing.T) {
	a := &cniplugin.Args{ContainerID: "c1", IfName: "eth0", StdinData: conf(`{"type":"static","addresses":[{"address":"10.10.0.5/24"}]}`)}
	for _, verb := range []func(context.Context, *cniplugin.Args) error{Plugin{}.Del, Plugin{}.Del, Plugin{}.GC, Plugin{}.Status} {
		if err := verb(ctx, a); err != nil {
			t.Error(err)
		}
	}
}
