package flannel

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

const (
	v4Env   = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	dualEnv = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\n" +
		"FLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
	v6Env = "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"
)

func testEnv(t testing.TB, s string) envfile.Env {
	t.Helper()
	e, err := envfile.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestRender: the delegate configuration is what flannel's plugin renders
// for the same input (its README's example is the first case).
func TestRender(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]any
		env   string
		want  string
	}{
		{"kubelet's conflist entry", map[string]any{"cniVersion": "0.3.1", "delegate": map[string]any{"hairpinMode": true, "isDefaultGateway": true}}, v4Env,
			`{"cniVersion":"0.3.1","name":"cbr0","type":"bridge","hairpinMode":true,"isDefaultGateway":true,"ipMasq":false,"mtu":1450,"isGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`},
		{"dual-stack, daemon not masquerading", nil, dualEnv,
			`{"cniVersion":"1.1.0","name":"cbr0","type":"bridge","ipMasq":true,"mtu":1430,"isGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24"}],[{"subnet":"fd00:10:244:3::/64"}]],
			"routes":[{"dst":"10.244.0.0/16"},{"dst":"fd00:10:244::/56"}]}}`},
		{"IPv6 only", nil, v6Env,
			`{"cniVersion":"1.1.0","name":"cbr0","type":"bridge","ipMasq":false,"mtu":1430,"isGateway":true,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"fd00:10:244:3::/64"}]],"routes":[{"dst":"fd00:10:244::/56"}]}}`},
		{"the block's own values win, cniVersion does not", map[string]any{"delegate": map[string]any{"cniVersion": "0.4.0", "ipMasq": true, "mtu": 1400,
			"isGateway": false, "bridge": "kbr0"}}, v4Env,
			`{"cniVersion":"1.1.0","name":"cbr0","type":"bridge","ipMasq":true,"mtu":1400,"isGateway":false,"bridge":"kbr0",
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`},
		{"other delegate: no isGateway", map[string]any{"delegate": map[string]any{"type": "macvlan", "master": "eth1"}}, v4Env,
			`{"cniVersion":"1.1.0","name":"cbr0","type":"macvlan","master":"eth1","ipMasq":false,"mtu":1450,
			"ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.3.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}]}}`},
		{"ipam base: own keys kept, own routes first", map[string]any{"ipam": map[string]any{"type": "static-ish", "dataDir": "/x",
			"routes": []map[string]any{{"dst": "10.96.0.0/12", "gw": "10.244.3.1"}}}, "runtimeConfig": map[string]any{"mac": "02:00:00:00:00:01"}}, v4Env,
			`{"cniVersion":"1.1.0","name":"cbr0","type":"bridge","ipMasq":false,"mtu":1450,"isGateway":true,"runtimeConfig":{"mac":"02:00:00:00:00:01"},
			"ipam":{"type":"static-ish","dataDir":"/x","ranges":[[{"subnet":"10.244.3.0/24"}]],"routes":[{"dst":"10.96.0.0/12","gw":"10.244.3.1"},{"dst":"10.244.0.0/16"}]}}`},
		{"no subnet.env (DEL fallback): no ranges, masquerade rules removed if any", nil, "",
			`{"cniVersion":"1.1.0","name":"cbr0","type":"bridge","ipMasq":true,"isGateway":true,"ipam":{"type":"host-local"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConf(confJSON(t, tt.extra))
			if err != nil {
				t.Fatal(err)
			}
			got := render(c, testEnv(t, tt.env)).bytes()
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.want), &w); err != nil {
				t.Fatalf("bad want: %v", err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("rendered\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}
