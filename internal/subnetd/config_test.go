package subnetd

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// flanneldFlags is every flag flanneld v0.28 defines: its main.go's
// flannelFlags, and the three of klog's it copies in (v, vmodule,
// log_backtrace_at).
var flanneldFlags = []string{
	"etcd-endpoints", "etcd-prefix", "etcd-keyfile", "etcd-certfile", "etcd-cafile", "etcd-username",
	"etcd-password", "iface", "iface-regex", "iface-can-reach", "subnet-file", "public-ip", "public-ipv6",
	"subnet-lease-renew-margin", "ip-masq", "ip-masq-fully-random-disable", "kube-subnet-mgr", "kube-api-url",
	"kube-annotation-prefix", "kubeconfig-file", "version", "healthz-ip", "healthz-port", "iptables-resync",
	"iptables-forward-rules", "ip-blackhole-route", "net-config-path", "set-node-network-unavailable",
	"v", "vmodule", "log_backtrace_at",
}

// parse reads a command line and environment as main does.
func parse(t *testing.T, args []string, env map[string]string) (*Config, error) {
	t.Helper()
	return parseCommandLine(args, func(k string) string { return env[k] }, io.Discard)
}

// TestFlanneldDefaults: without flags, flanneld's defaults (but for
// --etcd-endpoints: empty runs the embedded etcd).
func TestFlanneldDefaults(t *testing.T) {
	c, err := parse(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		flag      string
		got, want any
	}{
		{"etcd-prefix", c.EtcdPrefix, "/coreos.com/network"},
		{"iface", len(c.Ifaces) + len(c.IfaceRegex) + len(c.IfaceCanReach), 0},
		{"subnet-file", c.SubnetFile, "/run/flannel/subnet.env"},
		{"public-ip", c.PublicIP + c.PublicIPv6, ""},
		{"subnet-lease-renew-margin", c.RenewMargin, 60},
		{"ip-masq", c.IPMasq || c.NoRandomFully || c.KubeSubnetMgr || c.BlackholeRoute, false},
		{"kube-annotation-prefix", c.KubeAnnotationPrefix, "flannel.alpha.coreos.com"},
		{"healthz-ip", c.HealthzIP, "0.0.0.0"},
		{"healthz-port", c.HealthzPort, 0},
		{"iptables-resync", c.IPTablesResync, 5},
		{"iptables-forward-rules", c.ForwardRules, true},
		{"net-config-path", c.NetConfigPath, "/etc/kube-flannel/net-conf.json"},
		{"set-node-network-unavailable", c.SetNodeNetworkUnavailable, true},
		{"v", c.Verbosity, 0},
		{"log-level", c.LogLevel, "info"},
	} {
		if f.got != f.want {
			t.Errorf("--%s defaults to %v, want flanneld's %v", f.flag, f.got, f.want)
		}
	}
}

// TestFlanneldFlags: every flag of flanneld v0.28 is accepted, with
// "--flag", flanneld's single-dash "-flag" and FLANNELD_FLAG alike, and
// sets what it means; the two subnetd cannot honour are refused by
// Validate naming them.
func TestFlanneldFlags(t *testing.T) {
	cases := []struct {
		args    []string // --name=value or --name
		noEnv   bool     // a repeated flag, or --version: no variable form
		check   func(c *Config) bool
		refused string // Validate's error names it
	}{
		{args: []string{"--etcd-endpoints=http://10.0.0.1:2379,http://10.0.0.2:2379"}, check: func(c *Config) bool {
			return slices.Equal(c.endpoints(), []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379"})
		}},
		{args: []string{"--etcd-prefix=/example.com/net"}, check: func(c *Config) bool { return c.EtcdPrefix == "/example.com/net" }},
		{args: []string{"--etcd-keyfile=/k.pem", "--etcd-certfile=/c.pem", "--etcd-cafile=/ca.pem"}, check: func(c *Config) bool {
			return c.EtcdKeyFile == "/k.pem" && c.EtcdCertFile == "/c.pem" && c.EtcdCAFile == "/ca.pem"
		}},
		{args: []string{"--etcd-username=flannel", "--etcd-password=secret"}, check: func(c *Config) bool {
			return c.EtcdUsername == "flannel" && c.EtcdPassword == "secret"
		}},
		{args: []string{"--iface=eth0"}, check: func(c *Config) bool { return slices.Equal(c.Ifaces, []string{"eth0"}) }},
		{args: []string{"--iface=eth1", "--iface=10.0.0.5"}, noEnv: true, check: func(c *Config) bool {
			return slices.Equal(c.Ifaces, []string{"eth1", "10.0.0.5"})
		}},
		{args: []string{`--iface-regex=^10\.0\.`, "--iface-regex=^en"}, noEnv: true, check: func(c *Config) bool {
			return slices.Equal(c.IfaceRegex, []string{`^10\.0\.`, "^en"})
		}},
		{args: []string{"--iface-regex=^en"}, check: func(c *Config) bool { return slices.Equal(c.IfaceRegex, []string{"^en"}) }},
		{args: []string{"--iface-can-reach=192.168.0.1"}, check: func(c *Config) bool { return c.IfaceCanReach == "192.168.0.1" }},
		{args: []string{"--subnet-file=/run/x/subnet.env"}, check: func(c *Config) bool { return c.SubnetFile == "/run/x/subnet.env" }},
		{args: []string{"--public-ip=203.0.113.5", "--public-ipv6=2001:db8::5"}, check: func(c *Config) bool {
			return c.PublicIP == "203.0.113.5" && c.PublicIPv6 == "2001:db8::5"
		}},
		{args: []string{"--subnet-lease-renew-margin=30"}, check: func(c *Config) bool { return c.RenewMargin == 30 }},
		{args: []string{"--ip-masq"}, check: func(c *Config) bool { return c.IPMasq }},
		{args: []string{"--ip-masq-fully-random-disable"}, check: func(c *Config) bool { return c.NoRandomFully && c.deprecated == nil }},
		{args: []string{"--kube-subnet-mgr", "--kube-api-url=https://10.0.0.1:6443", "--kube-annotation-prefix=example.com",
			"--kubeconfig-file=/etc/kubeconfig", "--net-config-path=/etc/net.json", "--set-node-network-unavailable=false"},
			check: func(c *Config) bool {
				return c.KubeSubnetMgr && c.KubeAPIURL == "https://10.0.0.1:6443" && c.KubeAnnotationPrefix == "example.com" &&
					c.Kubeconfig == "/etc/kubeconfig" && c.NetConfigPath == "/etc/net.json" && !c.SetNodeNetworkUnavailable
			}},
		{args: []string{"--version"}, noEnv: true, check: func(c *Config) bool { return c.Version }},
		{args: []string{"--healthz-ip=127.0.0.1", "--healthz-port=8471"}, check: func(c *Config) bool {
			return c.HealthzIP == "127.0.0.1" && c.HealthzPort == 8471
		}},
		{args: []string{"--iptables-resync=20"}, check: func(c *Config) bool { return c.IPTablesResync == 20 }},
		{args: []string{"--iptables-forward-rules=false"}, check: func(c *Config) bool { return !c.ForwardRules }},
		{args: []string{"--ip-blackhole-route"}, check: func(c *Config) bool { return c.BlackholeRoute }},
		{args: []string{"--v=2"}, check: func(c *Config) bool { return c.Verbosity == 2 && c.LogLevel == "debug" }},
		{args: []string{"--vmodule=main=4"}, refused: "--vmodule"},
		{args: []string{"--log_backtrace_at=main.go:100"}, refused: "--log_backtrace_at"},
	}
	covered := map[string]bool{}
	for _, tc := range cases {
		forms := map[string]func() (*Config, error){
			"--flag": func() (*Config, error) { return parse(t, tc.args, nil) },
			"-flag":  func() (*Config, error) { return parse(t, singleDash(tc.args), nil) },
		}
		if !tc.noEnv {
			forms["FLANNELD_FLAG"] = func() (*Config, error) { return parse(t, nil, asEnv(tc.args)) }
		}
		for form, parseForm := range forms {
			c, err := parseForm()
			if err != nil {
				t.Errorf("%q as %s: %v", tc.args, form, err)
				continue
			}
			err = c.Validate()
			switch {
			case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
				t.Errorf("%q as %s: Validate %v, want a refusal naming %s", tc.args, form, err, tc.refused)
			case tc.refused == "" && err != nil:
				t.Errorf("%q as %s: Validate %v", tc.args, form, err)
			case tc.refused == "" && !tc.check(c):
				t.Errorf("%q as %s: not applied: %+v", tc.args, form, c)
			}
		}
		for _, a := range tc.args {
			covered[flagName(a)] = true
		}
	}
	for _, name := range flanneldFlags {
		if !covered[name] {
			t.Errorf("flanneld's --%s has no case", name)
		}
	}
}

// singleDash writes each --flag as Go's flag package also takes it, and
// flanneld's documentation often does: -flag.
func singleDash(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.TrimPrefix(a, "-")
	}
	return out
}

// asEnv is args as FLANNELD_ variables; a bare boolean flag is "true".
func asEnv(args []string) map[string]string {
	env := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !ok {
			value = "true"
		}
		env[envName(name)] = value
	}
	return env
}

func flagName(arg string) string {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name
}

// TestFlanneldEnv: a flag on the command line wins over its variable, as
// with flanneld's flagutil; every flag of subnetd's own has a variable too;
// FLANNELD_VERSION does nothing (flanneld reads --version first); a bad
// value is refused naming the variable.
func TestFlanneldEnv(t *testing.T) {
	env := map[string]string{"FLANNELD_IFACE": "eth9", "FLANNELD_IP_MASQ": "true", "FLANNELD_CHECK_INTERVAL": "2s",
		"FLANNELD_VERSION": "true", "FLANNELD_V": "3", "FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE": "false"}
	c, err := parse(t, []string{"--iface", "eth0", "--iface", "eth1", "--log-level=warn", "--ip-masq-random-fully-disable"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Ifaces, []string{"eth0", "eth1"}) || !c.IPMasq || c.CheckInterval != 2*time.Second || c.Version ||
		c.Verbosity != 3 || c.LogLevel != "warn" || !c.NoRandomFully {
		t.Errorf("command line and environment gave %+v", c)
	}
	if len(c.deprecated) != 1 || !strings.Contains(c.deprecated[0], "--ip-masq-fully-random-disable") {
		t.Errorf("the deprecated spelling is not warned about: %q", c.deprecated)
	}
	_, err = parse(t, nil, map[string]string{"FLANNELD_HEALTHZ_PORT": "eighty", "FLANNELD_IP_MASQ": "yes please"})
	for _, name := range []string{"FLANNELD_HEALTHZ_PORT", "FLANNELD_IP_MASQ"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("bad values: %v, want an error naming %s", err, name)
		}
	}
}

// TestValidateFlanneldFlags: bad values of the flags subnetd took from
// flanneld are refused naming the flag.
func TestValidateFlanneldFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--iptables-resync=0"}, "--iptables-resync"},
		{[]string{"--iface-regex=eth[0"}, "--iface-regex"},
		{[]string{"--iface-can-reach=gateway"}, "--iface-can-reach"},
		{[]string{"--public-ipv6=10.0.0.1"}, "--public-ipv6"},
		{[]string{"--public-ip=10.0.0.300"}, "--public-ip"},
	} {
		c, err := parse(t, tc.args, nil)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}
