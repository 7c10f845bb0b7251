package firewall

import (
	"context"
	"errors"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/iptablestest"
	"github.com/cnisuite/cni/pkg/netfilter/podfilter"
)

// prev is a bridge plugin's result: the bridge first, then the host veth
// and the container's interface, one address of each family.
const prev = `{"cniVersion":"1.1.0","interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/netns/pod"}],
	"ips":[{"address":"10.1.0.5/24","interface":2},{"address":"fd00::5/64","interface":2}]}`

// confWith is a configuration with extra keys (a JSON fragment ending in
// a comma, or "") and a prevResult ("" for none).
func confWith(extra, prevResult string) string {
	s := `{"cniVersion":"1.1.0","name":"net","type":"firewall",` + extra
	if prevResult != "" {
		s += `"prevResult":` + prevResult + `,`
	}
	return strings.TrimSuffix(s, ",") + "}"
}

func args(conf string) *cniplugin.Args {
	return &cniplugin.Args{ContainerID: "c1", Netns: "/run/netns/pod", IfName: "eth0", StdinData: []byte(conf)}
}

// recorder is a Plugin whose iptables changes nothing and that finds no
// firewalld: for tests of ADD with the iptables backend, and of what a
// bad configuration must not reach.
func recorder() (*Plugin, *iptablestest.Fake) {
	f := &iptablestest.Fake{}
	return &Plugin{bus: "unix:path=/nonexistent/bus", ipt: podfilter.IPTables{Run: f, Quick: func(family.Family, func(string) bool, bool) bool { return false }}}, f
}

// TestBadInput: every malformed configuration is refused with its code
// and a message that says what to do, before any rule is read or written.
func TestBadInput(t *testing.T) {
	tests := []struct {
		name, conf string
		code       uint
		says       string
	}{
		{"not JSON", `{"name":`, netconf.CodeDecoding, "not valid JSON"},
		{"backend a number", confWith(`"backend":4,`, prev), netconf.CodeDecoding, "backend"},
		{"no name", `{"cniVersion":"1.1.0","type":"firewall","prevResult":` + prev + `}`, netconf.CodeInvalidConfig, `"name"`},
		{"unknown backend", confWith(`"backend":"pf",`, prev), netconf.CodeInvalidConfig, `"iptables", "nftables" or "firewalld"`},
		{"unknown ingress policy", confWith(`"ingressPolicy":"closed",`, prev), netconf.CodeInvalidConfig, `"same-bridge"`},
		{"admin chain with a space", confWith(`"iptablesAdminChainName":"MY ADMIN",`, prev), netconf.CodeInvalidConfig, "1 to 28"},
		{"admin chain too long", confWith(`"iptablesAdminChainName":"`+strings.Repeat("A", 29)+`",`, prev), netconf.CodeInvalidConfig, "1 to 28"},
		{"admin chain FORWARD", confWith(`"iptablesAdminChainName":"FORWARD",`, prev), netconf.CodeInvalidConfig, "built-in"},
		{"admin chain the plugin's own", confWith(`"iptablesAdminChainName":"CNI-FORWARD",`, prev), netconf.CodeInvalidConfig, "own chains"},
		{"zone with a slash", confWith(`"firewalldZone":"../etc",`, prev), netconf.CodeInvalidConfig, "--get-zones"},
		{"no prevResult", confWith("", ""), netconf.CodeInvalidConfig, "chained after"},
		{"prevResult not a result", confWith("", `{"ips":"10.1.0.5"}`), netconf.CodeDecoding, "prevResult"},
		{"same-bridge without interfaces", confWith(`"ingressPolicy":"same-bridge",`, `{"cniVersion":"1.1.0","ips":[{"address":"10.1.0.5/24"}]}`),
			netconf.CodeInvalidConfig, "after the bridge plugin"},
		{"isolated with a bridge name that is not one", confWith(`"ingressPolicy":"isolated",`,
			`{"cniVersion":"1.1.0","interfaces":[{"name":"br 0"}],"ips":[{"address":"10.1.0.5/24"}]}`), netconf.CodeInvalidConfig, "not an interface name"},
		{"network name too long for the tag", `{"cniVersion":"1.1.0","type":"firewall","name":"` + strings.Repeat("n", 250) + `","prevResult":` + prev + `}`,
			netconf.CodeInvalidConfig, "shorten the network name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, f := recorder()
			_, err := p.Add(context.Background(), args(tt.conf))
			var ne *netconf.Error
			if !errors.As(err, &ne) || ne.Code != tt.code || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("ADD: %v, want code %d saying %q", err, tt.code, tt.says)
			}
			if len(f.Saves)+len(f.Restores) != 0 {
				t.Errorf("a bad configuration ran iptables: %q %q", f.Saves, f.Restores)
			}
		})
	}
}

// TestCheckNeedsPrevResult: CHECK without the prevResult of ADD is code 7.
func TestCheckNeedsPrevResult(t *testing.T) {
	p, _ := recorder()
	var ne *netconf.Error
	if err := p.Check(context.Background(), args(confWith(`"backend":"iptables",`, ""))); !errors.As(err, &ne) || ne.Code != netconf.CodeInvalidConfig {
		t.Errorf("CHECK without prevResult: %v, want code 7", err)
	}
}

func TestLoadConfDefaults(t *testing.T) {
	c, err := loadConf([]byte(confWith("", prev)))
	if err != nil {
		t.Fatal(err)
	}
	if c.zone != "trusted" || c.policy != "open" || c.Backend != "" {
		t.Errorf("defaults: zone %q, policy %q, backend %q", c.zone, c.policy, c.Backend)
	}
	pc, err := c.podConf(args(""), mustPrev(t, c))
	if err != nil || len(pc.Addrs) != 2 || pc.Isolation != nil || pc.AdminChain != "" {
		t.Errorf("podConf: %+v, %v", pc, err)
	}
}

func mustPrev(t *testing.T, c *conf) *current.Result {
	t.Helper()
	r, err := c.PrevResult()
	if err != nil || r == nil {
		t.Fatalf("prevResult: %v", err)
	}
	return r
}

// FuzzLoadConf: any configuration is taken, or refused with a CNI code,
// and the rules' inputs drawn from a prevResult it holds never panic.
func FuzzLoadConf(f *testing.F) {
	f.Add([]byte(confWith(`"ingressPolicy":"isolated","iptablesAdminChainName":"A.b+c-1",`, prev)))
	f.Add([]byte(confWith(`"backend":"firewalld","firewalldZone":"public",`, `{"cniVersion":"1.1.0","interfaces":[null],"ips":[{"address":"::ffff:10.0.0.1/96"}]}`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := loadConf(data)
		var ne *netconf.Error
		if err != nil {
			if !errors.As(err, &ne) {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		prev, err := c.PrevResult()
		if err != nil || prev == nil {
			return
		}
		if _, err := c.podConf(args(""), prev); err != nil && !errors.As(err, &ne) {
			t.Fatalf("error without a code: %v", err)
		}
	})
}
