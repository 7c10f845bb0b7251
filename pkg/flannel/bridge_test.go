package flannel

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestReaddressBridge runs in a namespace of its own with a bridge that
// holds the gateways of an old dual-stack subnet.
func TestReaddressBridge(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	newEnv := testEnv(t, dualEnv) // 10.244.3.1/24, fd00:10:244:3::1/64
	tests := []struct {
		name     string
		delegate map[string]any
		port     bool   // a pod's veth is attached
		want     string // global addresses left on the bridge, sorted
		err      string
	}{
		{"no pod: old gateways removed", nil, false, "10.244.3.1/24", ""},
		{"pods attached: refused", nil, true, "10.244.3.1/24 10.9.1.1/24 fd00:9:0:1::1/64", "10.9.1.0/24 to 10.244.3.0/24"},
		{"forceAddress: left to the bridge", map[string]any{"forceAddress": true}, true, "10.244.3.1/24 10.9.1.1/24 fd00:9:0:1::1/64", ""},
		{"no gateway on the bridge: nothing to do", map[string]any{"isGateway": false}, true, "10.244.3.1/24 10.9.1.1/24 fd00:9:0:1::1/64", ""},
		{"another bridge name: not this one", map[string]any{"bridge": "kbr0"}, true, "10.244.3.1/24 10.9.1.1/24 fd00:9:0:1::1/64", ""},
		{"another delegate: not touched", map[string]any{"type": "ptp"}, false, "10.244.3.1/24 10.9.1.1/24 fd00:9:0:1::1/64", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := netnstest.New(t, "fl-node")
			node.Run(t, "ip", "link", "add", "cni0", "type", "bridge")
			for _, a := range []string{"10.9.1.1/24", "fd00:9:0:1::1/64", "10.244.3.1/24"} {
				node.Run(t, "ip", "addr", "add", a, "dev", "cni0", "nodad")
			}
			node.Run(t, "ip", "link", "set", "cni0", "up")
			if tt.port {
				node.Run(t, "ip", "link", "add", "veth-pod", "master", "cni0", "type", "veth", "peer", "name", "veth-peer")
			}
			c := confWith(t, map[string]any{"delegate": tt.delegate})
			var err error
			node.Do(t, func() error {
				err = readdressBridge(render(c, newEnv), newEnv, slog.New(slog.DiscardHandler))
				return nil
			})
			if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if err != nil && (!strings.Contains(err.Error(), "veth-pod") || !strings.Contains(err.Error(), "drain")) {
				t.Errorf("the refusal names neither the attached interface nor what to do: %v", err)
			}
			fields := strings.Fields(node.Run(t, "ip", "-br", "addr", "show", "dev", "cni0"))
			var global []string
			for _, f := range fields[2:] {
				if !strings.HasPrefix(f, "fe80:") {
					global = append(global, f)
				}
			}
			slices.Sort(global)
			if got := strings.Join(global, " "); got != tt.want {
				t.Errorf("cni0 holds %q, want %q", got, tt.want)
			}
		})
	}
}
