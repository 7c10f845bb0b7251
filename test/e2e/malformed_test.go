package e2e

import (
	"strings"
	"testing"
)

// badInput is one malformed invocation and the CNI error code it must get.
type badInput struct {
	name  string
	cmd   string                 // CNI_COMMAND; ADD when empty
	edit  func(c map[string]any) // spoils a valid configuration
	stdin string                 // replaces the configuration when set
	env   map[string]string
	code  uint
	ipam  bool   // only for plugins whose configuration reserves through host-local
	only  string // only for this plugin, when set
}

func set(key string, v any) func(map[string]any) {
	return func(c map[string]any) { c[key] = v }
}

func unset(key string) func(map[string]any) {
	return func(c map[string]any) { delete(c, key) }
}

// portMappings replaces portmap's runtimeConfig by one mapping.
func portMappings(m map[string]any) func(map[string]any) {
	return set("runtimeConfig", map[string]any{"portMappings": []any{m}})
}

func setIPAM(key string, v any) func(map[string]any) {
	return func(c map[string]any) { c["ipam"].(map[string]any)[key] = v }
}

func ranges(sets ...[]map[string]any) []any {
	out := make([]any, len(sets))
	for i, s := range sets {
		out[i] = s
	}
	return out
}

// deep nests arrays past encoding/json's depth limit of 10000.
var deep = `{"cniVersion":"1.1.0","name":"e2e","type":"x","x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`

var badInputs = []badInput{
	{name: "invalid JSON", stdin: `{"cniVersion":"1.1.0","name":`, code: 6},
	{name: "empty configuration", stdin: "\n", code: 6},
	{name: "configuration not an object", stdin: `["bridge"]`, code: 6},
	{name: "deeply nested JSON", stdin: deep, code: 6},
	{name: "huge configuration", edit: set("pad", strings.Repeat("x", 2<<20)), code: 6},
	{name: "name not a string", edit: set("name", 42), code: 6},
	{name: "cniVersion not a string", edit: set("cniVersion", 1.1), code: 6},
	{name: "ipam not an object", edit: set("ipam", "host-local"), code: 6},
	{name: "missing name", edit: unset("name"), code: 7},
	{name: "name with a slash", edit: set("name", "a/b"), code: 7},
	{name: "missing type", edit: unset("type"), code: 7},
	{name: "unknown cniVersion", edit: set("cniVersion", "9.9.9"), code: 1},
	{name: "cniVersion not a version", edit: set("cniVersion", "one"), code: 1},
	{name: "CHECK at 0.3.1", cmd: "CHECK", edit: set("cniVersion", "0.3.1"), code: 1},
	{name: "GC at 1.0.0", cmd: "GC", edit: set("cniVersion", "1.0.0"), code: 1},
	{name: "STATUS at 0.4.0", cmd: "STATUS", edit: set("cniVersion", "0.4.0"), code: 1},
	{name: "CHECK of invalid JSON", cmd: "CHECK", stdin: `{"name":"e2e"`, code: 6},
	{name: "DEL of invalid JSON", cmd: "DEL", stdin: `{"name":"e2e"`, code: 6},
	{name: "GC of invalid JSON", cmd: "GC", stdin: `{"name":"e2e"`, code: 6},
	{name: "STATUS without a name", cmd: "STATUS", edit: unset("name"), code: 7},
	{name: "missing CNI_CONTAINERID", env: map[string]string{"CNI_CONTAINERID": ""}, code: 4},
	{name: "missing CNI_NETNS", env: map[string]string{"CNI_NETNS": ""}, code: 4},
	{name: "missing CNI_IFNAME", env: map[string]string{"CNI_IFNAME": ""}, code: 4},
	{name: "missing CNI_PATH", env: map[string]string{"CNI_PATH": ""}, code: 4},
	{name: "GC without CNI_PATH", cmd: "GC", env: map[string]string{"CNI_PATH": ""}, code: 4},
	{name: "unknown CNI_COMMAND", cmd: "FROB", code: 4},
	{name: "over-long ifname", env: map[string]string{"CNI_IFNAME": "eth0123456789abc"}, code: 4},
	{name: "ifname with a slash", env: map[string]string{"CNI_IFNAME": "eth/0"}, code: 4},
	{name: "ifname ..", env: map[string]string{"CNI_IFNAME": ".."}, code: 4},
	{name: "container ID with a slash", env: map[string]string{"CNI_CONTAINERID": "abc/def"}, code: 4},
	{name: "container ID ..", env: map[string]string{"CNI_CONTAINERID": ".."}, code: 4},
	{name: "container ID climbing out", cmd: "DEL", env: map[string]string{"CNI_CONTAINERID": "../../etc/passwd"}, code: 4},

	{name: "bad CIDR", ipam: true, edit: setIPAM("ranges", ranges([]map[string]any{{"subnet": "10.99.0.0/33"}})), code: 7},
	{name: "subnet not an address", ipam: true, edit: setIPAM("ranges", ranges([]map[string]any{{"subnet": "ten.0.0.0/8"}})), code: 7},
	{name: "legacy subnet bad", ipam: true, edit: func(c map[string]any) {
		setIPAM("ranges", nil)(c)
		setIPAM("subnet", "300.1.1.0/24")(c)
	}, code: 7},
	{name: "overlapping ranges", ipam: true, edit: setIPAM("ranges", ranges(
		[]map[string]any{{"subnet": "10.99.0.0/24"}}, []map[string]any{{"subnet": "10.99.0.128/25"}})), code: 7},
	{name: "gateway outside the subnet", ipam: true, edit: setIPAM("ranges", ranges(
		[]map[string]any{{"subnet": "10.99.0.0/24", "gateway": "10.98.0.1"}})), code: 7},
	{name: "rangeStart outside the subnet", ipam: true, edit: setIPAM("ranges", ranges(
		[]map[string]any{{"subnet": "10.99.0.0/24", "rangeStart": "10.98.0.10"}})), code: 7},
	{name: "ranges not a list", ipam: true, edit: setIPAM("ranges", "10.99.0.0/24"), code: 6},
	{name: "route dst not a CIDR", ipam: true, edit: setIPAM("routes", []map[string]any{{"dst": "default"}}), code: 7},
	{name: "malformed CNI_ARGS", ipam: true, env: map[string]string{"CNI_ARGS": "IgnoreUnknown=1;IP"}, code: 4},
	{name: "CNI_ARGS IP not an address", ipam: true, env: map[string]string{"CNI_ARGS": "IP=10.99.0.x"}, code: 4},
	{name: "requested IP outside the ranges", ipam: true, env: map[string]string{"CNI_ARGS": "IP=10.1.1.1"}, code: 7},

	{name: "macvlan: unknown mode", only: "macvlan", edit: set("mode", "source"), code: 7},
	{name: "macvlan: mode not a string", only: "macvlan", edit: set("mode", 3), code: 6},
	{name: "macvlan: negative mtu", only: "macvlan", edit: set("mtu", -1), code: 7},
	{name: "macvlan: mtu above the master's", only: "macvlan", ipam: true, edit: set("mtu", 65000), code: 7},
	{name: "macvlan: master missing", only: "macvlan", ipam: true, edit: set("master", "e2e-nomaster"), code: 7},
	{name: "macvlan: master name too long", only: "macvlan", edit: set("master", "abcdefghijklmnopq"), code: 7},
	{name: "macvlan: master not Ethernet", only: "macvlan", ipam: true, edit: set("master", "lo"), code: 7},
	{name: "macvlan: multicast mac", only: "macvlan", edit: set("mac", "01:00:5e:00:00:01"), code: 7},
	{name: "macvlan: runtimeConfig mac not a MAC", only: "macvlan", edit: set("runtimeConfig", map[string]any{"mac": "nope"}), code: 7},
	{name: "macvlan: CNI_ARGS MAC not a MAC", only: "macvlan", env: map[string]string{"CNI_ARGS": "MAC=zz:zz"}, code: 4},
	{name: "macvlan: bcqueuelen negative", only: "macvlan", edit: set("bcqueuelen", -5), code: 6},
	{name: "macvlan: linkInContainer not a bool", only: "macvlan", edit: set("linkInContainer", "yes"), code: 6},
	{name: "macvlan: STATUS with the master missing", only: "macvlan", cmd: "STATUS", ipam: true, edit: set("master", "e2e-nomaster"), code: 50},
	{name: "portmap: no prevResult", only: "portmap", edit: unset("prevResult"), code: 7},
	{name: "portmap: CHECK without prevResult", only: "portmap", cmd: "CHECK", edit: unset("prevResult"), code: 7},
	{name: "portmap: hostPort 0", only: "portmap", edit: portMappings(map[string]any{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}), code: 7},
	{name: "portmap: containerPort above 65535", only: "portmap", edit: portMappings(map[string]any{"hostPort": 80, "containerPort": 70000}), code: 7},
	{name: "portmap: protocol icmp", only: "portmap", edit: portMappings(map[string]any{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}), code: 7},
	{name: "portmap: hostIP not an address", only: "portmap", edit: portMappings(map[string]any{"hostPort": 80, "containerPort": 80, "hostIP": "node-1"}), code: 7},
	{name: "portmap: portMappings not a list", only: "portmap", edit: set("runtimeConfig", map[string]any{"portMappings": "80:80"}), code: 6},
	{name: "static: address without a prefix length", only: "static", edit: setIPAM("addresses", []any{map[string]any{"address": "10.99.0.5"}}), code: 7},
	{name: "static: gateway of the other family", only: "static", edit: setIPAM("addresses", []any{map[string]any{"address": "10.99.0.5/24", "gateway": "fd00::1"}}), code: 7},
	{name: "static: CNI_ARGS IP without a prefix length", only: "static", env: map[string]string{"CNI_ARGS": "IgnoreUnknown=1;IP=10.99.0.7"}, code: 4},
	{name: "static: runtimeConfig ips not CIDR", only: "static", edit: set("runtimeConfig", map[string]any{"ips": []any{"10.99.0.7"}}), code: 7},
	{name: "static: route dst not a CIDR", only: "static", edit: setIPAM("routes", []map[string]any{{"dst": "default"}}), code: 7},
	{name: "portmap: unknown backend", only: "portmap", edit: set("backend", "ipvs"), code: 7},
	{name: "portmap: markMasqBit 32", only: "portmap", edit: set("markMasqBit", 32), code: 7},
	{name: "portmap: markMasqBit and externalSetMarkChain", only: "portmap", edit: func(c map[string]any) {
		c["markMasqBit"], c["externalSetMarkChain"] = 14, "KUBE-MARK-MASQ"
	}, code: 7},
	{name: "portmap: nftables conditions for iptables", only: "portmap", edit: func(c map[string]any) {
		c["backend"], c["conditionsV4"] = "iptables", []string{"ip saddr 10.0.0.0/8"}
	}, code: 7},
	{name: "portmap: nftables condition not understood", only: "portmap", edit: func(c map[string]any) {
		c["backend"], c["conditionsV4"] = "nftables", []string{"tcp dport 22"}
	}, code: 2},
}

// TestMalformedInput feeds every binary every malformed input that applies
// to it and checks the spec's failure contract: exit 1, one JSON error with
// the right code on stdout, no crash, and nothing left behind.
func TestMalformedInput(t *testing.T) {
	for _, plugin := range plugins(t) {
		t.Run(plugin, func(t *testing.T) {
			t.Parallel()
			sb := newSandbox(t)
			dataDir := t.TempDir()
			sb.prepare(t, plugin, dataDir)
			for _, tc := range badInputs {
				if (tc.ipam && !hostLocalIPAM(t, plugin)) || (tc.only != "" && tc.only != plugin) {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					if tc.ipam && !sb.privileged() && entersContainer(plugin) {
						t.Skip("needs root: the plugin reaches IPAM only inside a real container namespace")
					}
					stdin := []byte(tc.stdin)
					if tc.stdin == "" {
						conf := validConf(t, plugin, dataDir)
						if tc.edit != nil {
							tc.edit(conf)
						}
						stdin = jsonConf(t, conf)
					}
					cmd := tc.cmd
					if cmd == "" {
						cmd = "ADD"
					}
					call := sb.call(plugin, cmd, stdin)
					for k, v := range tc.env {
						call.env[k] = v
					}
					call.run(t).failsWith(t, tc.code)
					sb.clean(t)
					if r := reservations(t, dataDir, "e2e"); len(r) != 0 {
						t.Errorf("a failed call left reservations %v", r)
					}
				})
			}
		})
	}
}
