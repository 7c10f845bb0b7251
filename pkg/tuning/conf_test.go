package tuning

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
)

const base = `"cniVersion":"1.1.0","name":"n","type":"tuning"`

// paths renders resolved sysctls as "path=value" in their order.
func paths(c *conf) string {
	var out []string
	for _, s := range c.sysctls {
		out = append(out, s.path+"="+s.value)
	}
	return strings.Join(out, " ")
}

func TestLoadConf(t *testing.T) {
	tests := []struct {
		name, conf, args string
		check            func(*conf) bool
	}{
		{"nothing asked", `{` + base + `}`, "", func(c *conf) bool {
			return !c.touchesLink() && len(c.sysctls) == 0 && c.DataDir == DefaultDataDir
		}},
		{"every key", `{` + base + `,"mac":"02:00:00:00:00:04","promisc":true,"mtu":1400,"txQLen":0,"allmulti":false,"dataDir":"/tmp/t","sysctl":{"net.ipv4.ip_forward":"1"}}`, "",
			func(c *conf) bool {
				return c.mac.String() == "02:00:00:00:00:04" && c.promisc && c.mtu == 1400 && *c.txQLen == 0 && !*c.allmulti &&
					c.DataDir == "/tmp/t" && paths(c) == "net/ipv4/ip_forward=1"
			}},
		{"sysctls in the order written, IFNAME replaced", `{` + base + `,"sysctl":{"net.ipv6.conf.IFNAME.accept_ra":"0","net.core.somaxconn":"512","net.ipv4.conf.eth0.rp_filter":"2","net.ipv4.neigh.default.gc_thresh1":"64","net.ipv4.conf.all.log_martians":"1"}}`, "",
			func(c *conf) bool {
				return paths(c) == "net/ipv6/conf/eth0/accept_ra=0 net/core/somaxconn=512 net/ipv4/conf/eth0/rp_filter=2 net/ipv4/neigh/default/gc_thresh1=64 net/ipv4/conf/all/log_martians=1"
			}},
		{"args.cni over the top level, key by key", `{` + base + `,"mac":"02:00:00:00:00:04","promisc":true,"mtu":1400,"txQLen":5,"allmulti":true,
			"sysctl":{"net.ipv4.conf.IFNAME.rp_filter":"1","net.core.somaxconn":"512"},
			"args":{"cni":{"mac":"02:00:00:00:00:05","promisc":false,"mtu":9000,"txQLen":7,"allmulti":false,"sysctl":{"net.ipv4.conf.eth0.rp_filter":"2","net.ipv4.ip_forward":"1"}}}}`, "",
			func(c *conf) bool {
				return c.mac.String() == "02:00:00:00:00:05" && !c.promisc && c.mtu == 9000 && *c.txQLen == 7 && !*c.allmulti &&
					paths(c) == "net/ipv4/conf/eth0/rp_filter=2 net/core/somaxconn=512 net/ipv4/ip_forward=1"
			}},
		{"CNI_ARGS MAC over mac", `{` + base + `,"mac":"02:00:00:00:00:04"}`, "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=02:00:00:00:00:01",
			func(c *conf) bool { return c.mac.String() == "02:00:00:00:00:01" }},
		{"runtimeConfig over CNI_ARGS", `{` + base + `,"capabilities":{"mac":true},"runtimeConfig":{"mac":"02:00:00:00:00:03"}}`, "MAC=02:00:00:00:00:01",
			func(c *conf) bool { return c.mac.String() == "02:00:00:00:00:03" }},
		{"args.cni over runtimeConfig, as the reference tuning", `{` + base + `,"runtimeConfig":{"mac":"02:00:00:00:00:03"},"args":{"cni":{"mac":"02:00:00:00:00:02"}}}`, "MAC=02:00:00:00:00:01",
			func(c *conf) bool { return c.mac.String() == "02:00:00:00:00:02" }},
		{"sysctl null", `{` + base + `,"sysctl":null,"args":{"cni":{"sysctl":null}}}`, "", func(c *conf) bool { return len(c.sysctls) == 0 }},
		{"other args kept aside", `{` + base + `,"args":{"cni":{"ips":["10.1.0.5"]},"k8s":{"x":1}}}`, "", func(c *conf) bool { return !c.touchesLink() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConf([]byte(tt.conf), tt.args, "eth0")
			if err != nil || !tt.check(c) {
				t.Fatalf("loadConf = %+v (sysctls %s), %v", c, paths(c), err)
			}
		})
	}
}

// TestBadInput: every malformed configuration is refused with its code and
// a message naming the problem, by ADD before anything is touched (these
// need no namespace: the refusal comes first).
func TestBadInput(t *testing.T) {
	tests := []struct {
		name, conf, args, ifName string
		code                     uint
		want                     string
	}{
		{"not JSON", `{`, "", "eth0", 6, "not valid JSON"},
		{"mtu not a number", `{` + base + `,"mtu":"1400"}`, "", "eth0", 6, "mtu"},
		{"promisc not a bool", `{` + base + `,"promisc":"yes"}`, "", "eth0", 6, "promisc"},
		{"sysctl not an object", `{` + base + `,"sysctl":["net.ipv4.ip_forward"]}`, "", "eth0", 6, "must be an object"},
		{"sysctl value not a string", `{` + base + `,"sysctl":{"net.ipv4.ip_forward":1}}`, "", "eth0", 6, "must be a JSON string"},
		{"args.cni.sysctl value not a string", `{` + base + `,"args":{"cni":{"sysctl":{"net.ipv4.ip_forward":true}}}}`, "", "eth0", 6, "args.cni.sysctl"},
		{"no name", `{"cniVersion":"1.1.0","type":"tuning"}`, "", "eth0", 7, "name"},
		{"duplicated key", `{` + base + `,"sysctl":{"net.ipv4.ip_forward":"1","net.ipv4.ip_forward":"0"}}`, "", "eth0", 7, "twice"},
		{"one key two spellings", `{` + base + `,"sysctl":{"net.ipv4.conf.IFNAME.rp_filter":"1","net.ipv4.conf.eth0.rp_filter":"0"}}`, "", "eth0", 7, "twice"},
		{"path with slashes", `{` + base + `,"sysctl":{"net/ipv4/ip_forward":"1"}}`, "", "eth0", 7, `"/"`},
		{"dot-dot", `{` + base + `,"sysctl":{"net.ipv4..conf":"1"}}`, "", "eth0", 7, "empty element"},
		{"escape through ..", `{` + base + `,"sysctl":{"net.ipv4.conf.IFNAME/../../../kernel.hostname":"x"}}`, "", "eth0", 7, `"/"`},
		{"trailing dot", `{` + base + `,"sysctl":{"net.ipv4.ip_forward.":"1"}}`, "", "eth0", 7, "empty element"},
		{"not net", `{` + base + `,"sysctl":{"kernel.hostname":"x"}}`, "", "eth0", 7, "allowed are the net.* keys"},
		{"net alone", `{` + base + `,"sysctl":{"net.core":"1"}}`, "", "eth0", 7, "not a key of the pod's network namespace"},
		{"another interface", `{` + base + `,"sysctl":{"net.ipv4.conf.eth1.rp_filter":"1"}}`, "", "eth0", 7, `names interface "eth1"`},
		{"another interface's neigh", `{` + base + `,"args":{"cni":{"sysctl":{"net.ipv6.neigh.lo.retrans_time_ms":"1"}}}}`, "", "eth0", 7, `names interface "lo"`},
		{"space in key", `{` + base + `,"sysctl":{"net.ipv4.ip forward":"1"}}`, "", "eth0", 7, "space"},
		{"empty value", `{` + base + `,"sysctl":{"net.ipv4.ip_forward":""}}`, "", "eth0", 7, "empty"},
		{"negative mtu", `{` + base + `,"mtu":-1}`, "", "eth0", 7, `"mtu"`},
		{"huge mtu", `{` + base + `,"args":{"cni":{"mtu":4294967296}}}`, "", "eth0", 7, `"mtu"`},
		{"negative txQLen", `{` + base + `,"txQLen":-1}`, "", "eth0", 7, `"txQLen"`},
		{"huge txQLen", `{` + base + `,"txQLen":4294967296}`, "", "eth0", 7, `"txQLen"`},
		{"bad mac", `{` + base + `,"mac":"zz"}`, "", "eth0", 7, `"mac"`},
		{"multicast mac", `{` + base + `,"args":{"cni":{"mac":"01:00:5e:00:00:01"}}}`, "", "eth0", 7, "args.cni.mac"},
		{"zero mac", `{` + base + `,"runtimeConfig":{"mac":"00:00:00:00:00:00"}}`, "", "eth0", 7, "runtimeConfig.mac"},
		{"bad CNI_ARGS mac", `{` + base + `}`, "MAC=zz", "eth0", 4, "CNI_ARGS MAC"},
		{"malformed CNI_ARGS", `{` + base + `}`, "novalue", "eth0", 4, "CNI_ARGS"},
		{"relative dataDir", `{` + base + `,"dataDir":"tuning"}`, "", "eth0", 7, "absolute"},
		{"ifname with a slash", `{` + base + `,"sysctl":{"net.ipv4.conf.IFNAME.rp_filter":"1"}}`, "", "eth/0", 4, "CNI_IFNAME"},
		{"ifname ..", `{` + base + `}`, "", "..", 4, "CNI_IFNAME"},
		{"no prevResult", `{` + base + `,"mtu":1400}`, "", "eth0", 7, "prevResult"},
		{"bad prevResult", `{` + base + `,"prevResult":{"ips":[{"address":"x"}]}}`, "", "eth0", 6, "prevResult"},
	}
	p := &Plugin{Allowlist: filepath.Join(t.TempDir(), "none")}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			conf := strings.Replace(tt.conf, base, base+`,"dataDir":"`+dir+`"`, 1)
			a := &cniplugin.Args{ContainerID: "c1", Netns: "/run/netns/tuning-never-entered", IfName: tt.ifName, Args: tt.args, StdinData: []byte(conf)}
			_, err := p.Add(t.Context(), a)
			wantCode(t, err, tt.code, tt.want)
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("refused ADD left %v", entries)
			}
		})
	}
}

// wantCode fails unless err maps to the CNI code with a message holding want.
func wantCode(t *testing.T, err error, code uint, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want code %d", code)
	}
	if e := cniplugin.ToCNIError(err); e.Code != code || !strings.Contains(e.Msg, want) {
		t.Fatalf("error %q has code %d, want code %d and %q in it", e.Msg, e.Code, code, want)
	}
}

func TestAllowlist(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "allowlist.conf")
	sysctls := func(keys ...string) []sysctl {
		var out []sysctl
		for _, k := range keys {
			out = append(out, sysctl{key: k})
		}
		return out
	}
	if err := checkAllowlist(file, sysctls("net.anything")); err != nil {
		t.Fatalf("without the file every key passes: %v", err)
	}
	if err := os.WriteFile(file, []byte("^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n\n  ^net\\.core\\.somaxconn$  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkAllowlist(file, sysctls("net.ipv4.conf.IFNAME.rp_filter", "net.core.somaxconn")); err != nil {
		t.Fatalf("allowed keys refused: %v", err)
	}
	err := checkAllowlist(file, sysctls("net.core.somaxconn", "net.ipv4.conf.all.rp_filter"))
	wantCode(t, err, netconf.CodeInvalidConfig, `"net.ipv4.conf.all.rp_filter" is not allowed`)
	if !strings.Contains(err.Error(), `^net\.core\.somaxconn$`) {
		t.Errorf("refusal does not list the allowed patterns: %v", err)
	}
	if err := os.WriteFile(file, []byte("net.(\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantCode(t, checkAllowlist(file, sysctls("net.core.somaxconn")), netconf.CodeInvalidConfig, "line 1")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wantCode(t, checkAllowlist(file, sysctls("net.core.somaxconn")), netconf.CodeInvalidConfig, "not allowed")
	err = checkAllowlist(dir, sysctls("net.core.somaxconn"))
	wantCode(t, err, netconf.CodeIO, "allowlist")
	if !errors.Is(err, regfile.ErrNotRegular) {
		t.Errorf("a directory as the allowlist: %v", err)
	}
}

// FuzzLoadConf feeds arbitrary configurations, CNI_ARGS and ifnames:
// loadConf must never panic, every error must carry a CNI code, and what
// it accepts must resolve to paths under net/ that stay there.
func FuzzLoadConf(f *testing.F) {
	f.Add(`{`+base+`,"mac":"02:00:00:00:00:04","mtu":1400,"sysctl":{"net.ipv4.conf.IFNAME.rp_filter":"1"}}`, "MAC=02:00:00:00:00:01", "eth0")
	f.Add(`{`+base+`,"args":{"cni":{"sysctl":{"net.core.somaxconn":"1","net/../kernel":"x"}}}}`, "a=b;;c", "..")
	f.Add(`{`+base+`,"sysctl":{"net.ipv6.neigh.IFNAME.x":"1","net.ipv6.neigh.IFNAME.x":"2"}}`, "", "eth0.1")
	// Dots inside an ifname are no ".." element: the path stays where it is.
	f.Add(`{`+base+`,"sysctl":{"net.ipv4.conf.IFNAME.rp_filter":"1"}}`, "", "e......tLt")
	f.Fuzz(func(t *testing.T, stdin, args, ifName string) {
		c, err := loadConf([]byte(stdin), args, ifName)
		if err != nil {
			var ne *netconf.Error
			if !errors.As(err, &ne) {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		for _, s := range c.sysctls {
			if !strings.HasPrefix(s.path, "net/") || slices.Contains(strings.Split(s.path, "/"), "..") || filepath.Clean("/"+s.path) != "/"+s.path {
				t.Fatalf("key %q resolved to %q", s.key, s.path)
			}
		}
		if c.mtu < 0 || (c.txQLen != nil && *c.txQLen < 0) {
			t.Fatalf("accepted mtu %d txQLen %v", c.mtu, c.txQLen)
		}
	})
}
