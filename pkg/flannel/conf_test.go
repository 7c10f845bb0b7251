package flannel

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/netconf"
)

func confJSON(t testing.TB, extra map[string]any) []byte {
	t.Helper()
	c := map[string]any{"cniVersion": "1.1.0", "name": "cbr0", "type": "flannel"}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoadConfDefaults(t *testing.T) {
	c, err := loadConf(confJSON(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.SubnetFile != "/run/flannel/subnet.env" || c.DataDir != "/var/lib/cni/flannel" || c.wait != 5*time.Second || c.delegateType != "bridge" {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = loadConf(confJSON(t, map[string]any{"subnetFile": "/x/s.env", "dataDir": "/x/d", "subnetFileWait": "250ms",
		"delegate": map[string]any{"type": "macvlan", "master": "eth1"}, "runtimeConfig": nil}))
	if err != nil {
		t.Fatal(err)
	}
	if c.SubnetFile != "/x/s.env" || c.DataDir != "/x/d" || c.wait != 250*time.Millisecond || c.delegateType != "macvlan" || c.RuntimeConfig != nil {
		t.Fatalf("set: %+v", c)
	}
}

func TestLoadConfErrors(t *testing.T) {
	tests := []struct {
		name  string
		extra map[string]any
		code  uint
	}{
		{"delegate type not a string", map[string]any{"delegate": map[string]any{"type": 5}}, 6},
		{"delegate not an object", map[string]any{"delegate": "bridge"}, 6},
		{"delegate with a name", map[string]any{"delegate": map[string]any{"name": "x"}}, 7},
		{"delegate with ipam", map[string]any{"delegate": map[string]any{"ipam": map[string]any{"type": "host-local"}}}, 7},
		{"delegate type flannel", map[string]any{"delegate": map[string]any{"type": "flannel"}}, 7},
		{"delegate type a path", map[string]any{"delegate": map[string]any{"type": "../../bin/sh"}}, 7},
		{"delegate type empty", map[string]any{"delegate": map[string]any{"type": ""}}, 7},
		{"ipam not an object", map[string]any{"ipam": "host-local"}, 6},
		{"ipam type not a string", map[string]any{"ipam": map[string]any{"type": true}}, 6},
		{"ipam ranges", map[string]any{"ipam": map[string]any{"ranges": [][]map[string]any{{{"subnet": "10.1.0.0/24"}}}}}, 7},
		{"ipam ranges not a list", map[string]any{"ipam": map[string]any{"ranges": "10.1.0.0/24"}}, 6},
		{"ipam legacy subnet", map[string]any{"ipam": map[string]any{"subnet": "10.1.0.0/24"}}, 7},
		{"ipam route not a CIDR", map[string]any{"ipam": map[string]any{"routes": []map[string]any{{"dst": "default"}}}}, 7},
		{"ipam routes not a list", map[string]any{"ipam": map[string]any{"routes": map[string]any{}}}, 6},
		{"subnetFileWait not a duration", map[string]any{"subnetFileWait": "soon"}, 7},
		{"subnetFileWait negative", map[string]any{"subnetFileWait": "-1s"}, 7},
		{"subnetFileWait too long", map[string]any{"subnetFileWait": "1h"}, 7},
		{"subnetFileWait a number", map[string]any{"subnetFileWait": 5}, 6},
		{"subnetFile not a string", map[string]any{"subnetFile": 1}, 6},
		{"name with a slash", map[string]any{"name": "a/b"}, 7},
		{"no name", map[string]any{"name": nil}, 7},
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

// FuzzLoadConf: any input either fails with a CNI code or gives a
// configuration that renders into JSON a delegate can read back.
func FuzzLoadConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`))
	f.Add([]byte(`{"name":"n","type":"flannel","ipam":{"routes":[{"dst":"10.96.0.0/12"}],"dataDir":"/x"},"runtimeConfig":{"a":1},"subnetFileWait":"1s"}`))
	f.Add([]byte(`{"name":"n","type":"flannel","delegate":{"type":null,"name":null},"ipam":{"ranges":null}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := loadConf(data)
		if err != nil {
			var ne *netconf.Error
			if !errors.As(err, &ne) || ne.Code == 0 {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		d, err := parseDelegate(render(c, testEnv(t, dualEnv)).bytes())
		if err != nil || d.typ() != c.delegateType {
			t.Fatalf("rendered delegate unreadable (%v) or of type %q, want %q", err, d.typ(), c.delegateType)
		}
	})
}
