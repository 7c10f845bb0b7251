package portmap

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/hostport"
)

func confJSON(t *testing.T, extra map[string]any) []byte {
	t.Helper()
	c := map[string]any{"cniVersion": "1.1.0", "name": "net", "type": "portmap"}
	for k, v := range extra {
		c[k] = v
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func maps(m ...map[string]any) map[string]any {
	return map[string]any{"portMappings": m}
}

func TestLoadConfDefaults(t *testing.T) {
	c, err := loadConf(confJSON(t, map[string]any{"backend": "iptables",
		"runtimeConfig": maps(map[string]any{"hostPort": 80, "containerPort": 8080, "hostIP": "::ffff:192.0.2.1"}, map[string]any{"hostPort": 53, "containerPort": 53, "protocol": "UDP"})}))
	if err != nil {
		t.Fatal(err)
	}
	want := []hostport.PortMap{
		{HostPort: 80, ContainerPort: 8080, Protocol: "tcp", HostIP: netip.MustParseAddr("192.0.2.1")},
		{HostPort: 53, ContainerPort: 53, Protocol: "udp"},
	}
	if !c.hp.SNAT || c.hp.MasqAll || c.hp.MarkBit != 13 || c.backend != backendIPTables || !slices.Equal(c.hp.Maps, want) {
		t.Errorf("conf = %+v, maps %+v", c.hp, c.hp.Maps)
	}
}

func TestLoadConfErrors(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]any
		code  uint
	}{
		{"markMasqBit too big", map[string]any{"markMasqBit": 32}, 7},
		{"markMasqBit negative", map[string]any{"markMasqBit": -1}, 7},
		{"markMasqBit with externalSetMarkChain", map[string]any{"markMasqBit": 14, "externalSetMarkChain": "KUBE-MARK-MASQ"}, 7},
		{"externalSetMarkChain with a space", map[string]any{"externalSetMarkChain": "KUBE MARK"}, 7},
		{"externalSetMarkChain with nftables", map[string]any{"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ"}, 7},
		{"unknown backend", map[string]any{"backend": "ebpf"}, 7},
		{"iptables conditions with nftables", map[string]any{"backend": "nftables", "conditionsV6": []string{"!", "-d", "fd00::/8"}}, 7},
		{"nftables conditions with iptables", map[string]any{"backend": "iptables", "conditionsV4": []string{"ip saddr 10.0.0.0/8"}}, 7},
		{"condition with a newline", map[string]any{"backend": "iptables", "conditionsV4": []string{"-s 10.0.0.1\n-A INPUT"}}, 7},
		{"nftables condition not understood", map[string]any{"backend": "nftables", "conditionsV4": []string{"ct state new"}}, 2},
		{"hostPort 0", map[string]any{"runtimeConfig": maps(map[string]any{"hostPort": 0, "containerPort": 80})}, 7},
		{"containerPort too big", map[string]any{"runtimeConfig": maps(map[string]any{"hostPort": 80, "containerPort": 65536})}, 7},
		{"protocol icmp", map[string]any{"runtimeConfig": maps(map[string]any{"hostPort": 80, "containerPort": 80, "protocol": "icmp"})}, 7},
		{"hostIP with a zone", map[string]any{"runtimeConfig": maps(map[string]any{"hostPort": 80, "containerPort": 80, "hostIP": "fe80::1%eth0"})}, 7},
		{"snat not a bool", map[string]any{"snat": "yes"}, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConf(confJSON(t, tt.extra))
			var ne *netconf.Error
			if !errors.As(err, &ne) || ne.Code != tt.code {
				t.Fatalf("err = %v, want code %d", err, tt.code)
			}
		})
	}
}

func TestContainerAddrs(t *testing.T) {
	ipc := func(cidr string, iface *int) *current.IPConfig {
		ip, n, _ := net.ParseCIDR(cidr)
		n.IP = ip
		return &current.IPConfig{Address: *n, Interface: iface}
	}
	prev := &current.Result{
		Interfaces: []*current.Interface{{Name: "cni0"}, {Name: "veth1"}, {Name: "eth0", Sandbox: "/run/netns/x"}, {Name: "eth1", Sandbox: "/run/netns/x"}},
		IPs: []*current.IPConfig{
			ipc("10.9.0.1/24", current.Int(0)), // the bridge's: skipped
			ipc("10.8.0.5/24", current.Int(3)), // another container interface: skipped
			ipc("10.1.0.5/24", current.Int(2)),
			ipc("10.1.0.6/24", current.Int(2)), // only the first of a family
			ipc("fd00::5/64", nil),             // no interface: taken, as the reference
		},
	}
	got := containerAddrs(prev, "eth0")
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24"), netip.MustParsePrefix("fd00::5/64")}
	if !slices.Equal(got, want) {
		t.Errorf("containerAddrs = %v, want %v", got, want)
	}
}

// recorder is an iptables that records what it is asked.
type recorder struct{ calls []string }

func (r *recorder) Run(_ context.Context, stdin, name string, _ ...string) (string, error) {
	r.calls = append(r.calls, name)
	return "", nil
}

func TestAddPassesThrough(t *testing.T) {
	prevResult := map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.1.0.5/24"}}}
	rec := &recorder{}
	p := &Plugin{ipt: hostport.IPTables{Run: rec}}
	args := func(conf []byte) *cniplugin.Args {
		return &cniplugin.Args{ContainerID: "c1", IfName: "eth0", StdinData: conf}
	}
	_, err := p.Add(context.Background(), args(confJSON(t, map[string]any{"backend": "iptables"})))
	var ne *netconf.Error
	if !errors.As(err, &ne) || ne.Code != 7 {
		t.Fatalf("ADD without prevResult: %v, want code 7", err)
	}
	res, err := p.Add(context.Background(), args(confJSON(t, map[string]any{"backend": "iptables", "prevResult": prevResult})))
	if err != nil || len(rec.calls) != 0 {
		t.Fatalf("ADD without mappings: %v, ran %v", err, rec.calls)
	}
	if r := res.(*current.Result); len(r.IPs) != 1 || r.IPs[0].Address.String() != "10.1.0.5/24" {
		t.Errorf("result %+v is not the prevResult", r)
	}
	if err := p.Check(context.Background(), args(confJSON(t, map[string]any{"backend": "iptables"}))); !errors.As(err, &ne) || ne.Code != 7 {
		t.Errorf("CHECK without prevResult: %v, want code 7", err)
	}
}

// FuzzLoadConf: any input gives a configuration or an error with a CNI code.
func FuzzLoadConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"tcp","hostIP":"10.0.0.1"}]}}`))
	f.Add([]byte(`{"name":"n","type":"portmap","backend":"nftables","conditionsV4":["ip saddr 10.0.0.0/8"],"markMasqBit":3}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := loadConf(b)
		var ne *netconf.Error
		if err != nil && !errors.As(err, &ne) {
			t.Fatalf("error without a CNI code: %v", err)
		}
		if err == nil && (c.hp.MarkBit < 0 || c.hp.MarkBit > 31) {
			t.Fatalf("mark bit %d accepted", c.hp.MarkBit)
		}
	})
}
