package hostlocal

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/netconf"
)

// conf builds a configuration whose ipam section is ipamJSON plus dataDir.
func conf(dataDir, ipamJSON string, extra ...string) string {
	top := ""
	for _, e := range extra {
		top += "," + e
	}
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"net1","type":"bridge"%s,"ipam":{"type":"host-local","dataDir":%q,%s}}`, top, dataDir, ipamJSON)
}

func setsString(c *config) string {
	var parts []string
	for _, s := range c.sets {
		parts = append(parts, s.String())
	}
	return strings.Join(parts, " | ")
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		args      string
		wantSets  string
		wantReq   string
		wantRoute string
	}{
		{name: "legacy", in: conf("/d", `"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","gateway":"10.1.0.254"`), wantSets: "10.1.0.10-10.1.0.254"},
		{name: "dual stack", in: conf("/d", `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`), wantSets: "10.1.0.1-10.1.0.254 | fd00::1-fd00::ff"},
		{name: "legacy before ranges", in: conf("/d", `"subnet":"10.1.0.0/24","ranges":[[{"subnet":"fd00::/120"}]]`), wantSets: "10.1.0.1-10.1.0.254 | fd00::1-fd00::ff"},
		{name: "runtime ranges first", in: conf("/d", `"ranges":[[{"subnet":"fd00::/120"}]]`, `"runtimeConfig":{"ipRanges":[[{"subnet":"10.5.0.0/24"}]]}`), wantSets: "10.5.0.1-10.5.0.254 | fd00::1-fd00::ff"},
		{name: "requested from all sources", in: conf("/d", `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`, `"args":{"cni":{"ips":["10.1.0.7/24"]}}`, `"runtimeConfig":{"ips":["fd00::7","10.1.0.5"]}`),
			args: "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.5,fd00::9", wantSets: "10.1.0.1-10.1.0.254 | fd00::1-fd00::ff", wantReq: "10.1.0.5 fd00::9 10.1.0.7 fd00::7"},
		{name: "routes", in: conf("/d", `"subnet":"10.1.0.0/24","routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.1.0.9"},{"dst":"fd00::1/64"}]`), wantSets: "10.1.0.1-10.1.0.254", wantRoute: "0.0.0.0/0  192.168.0.0/16 10.1.0.9 fd00::1/64 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig([]byte(tt.in), tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if got := setsString(c); got != tt.wantSets {
				t.Errorf("sets %q, want %q", got, tt.wantSets)
			}
			var req []string
			for _, a := range c.requested {
				req = append(req, a.String())
			}
			if got := strings.Join(req, " "); got != tt.wantReq {
				t.Errorf("requested %q, want %q", got, tt.wantReq)
			}
			if tt.wantRoute != "" {
				var rs []string
				for _, r := range c.routes {
					gw := ""
					if r.GW != nil {
						gw = r.GW.String()
					}
					rs = append(rs, r.Dst.String()+" "+gw)
				}
				if got := strings.Join(rs, " "); got != tt.wantRoute {
					t.Errorf("routes %q, want %q", got, tt.wantRoute)
				}
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name, in, args string
		code           uint
		want           string
	}{
		{"not json", `{"name":`, "", netconf.CodeDecoding, "not valid JSON"},
		{"no name", `{"cniVersion":"1.1.0","type":"bridge","ipam":{}}`, "", netconf.CodeInvalidConfig, "no \"name\""},
		{"no ipam", `{"cniVersion":"1.1.0","name":"n","type":"bridge"}`, "", netconf.CodeInvalidConfig, "\"ipam\" is required"},
		{"no ranges", conf("/d", `"routes":[]`), "", netconf.CodeInvalidConfig, "no IP ranges specified"},
		{"bad cidr", conf("/d", `"subnet":"10.1.0.0/33"`), "", netconf.CodeInvalidConfig, "is not a CIDR"},
		{"gateway outside", conf("/d", `"ranges":[[{"subnet":"10.1.0.0/24","gateway":"10.2.0.1"}]]`), "", netconf.CodeInvalidConfig, "gateway 10.2.0.1 is outside subnet 10.1.0.0/24"},
		{"overlap across sets", conf("/d", `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.0/16"}]]`), "", netconf.CodeInvalidConfig, "overlaps range set"},
		{"legacy overlaps ranges", conf("/d", `"subnet":"10.1.0.0/24","ranges":[[{"subnet":"10.1.0.0/24"}]]`), "", netconf.CodeInvalidConfig, "overlaps"},
		{"range wrong type", conf("/d", `"ranges":[{"subnet":"10.1.0.0/24"}]`), "", netconf.CodeDecoding, "must be a JSON"},
		{"bad route", conf("/d", `"subnet":"10.1.0.0/24","routes":[{"dst":"default"}]`), "", netconf.CodeInvalidConfig, "routes[0].dst \"default\""},
		{"route families", conf("/d", `"subnet":"10.1.0.0/24","routes":[{"dst":"0.0.0.0/0","gw":"fd00::1"}]`), "", netconf.CodeInvalidConfig, "different IP families"},
		{"bad CNI_ARGS", conf("/d", `"subnet":"10.1.0.0/24"`), "IP", netconf.CodeInvalidEnv, "not KEY=VALUE"},
		{"bad CNI_ARGS IP", conf("/d", `"subnet":"10.1.0.0/24"`), "IP=10.1.0.x", netconf.CodeInvalidEnv, "CNI_ARGS IP: \"10.1.0.x\""},
		{"bad args ip", conf("/d", `"subnet":"10.1.0.0/24"`, `"args":{"cni":{"ips":["nope"]}}`), "", netconf.CodeInvalidConfig, "args.cni.ips"},
		{"bad runtime ip", conf("/d", `"subnet":"10.1.0.0/24"`, `"runtimeConfig":{"ips":["1.2.3.4/99"]}`), "", netconf.CodeInvalidConfig, "runtimeConfig.ips"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig([]byte(tt.in), tt.args)
			var ne *netconf.Error
			if !errors.As(err, &ne) || ne.Code != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want code %d containing %q", err, tt.code, tt.want)
			}
		})
	}
}

func TestRequestedPerSet(t *testing.T) {
	in := conf("/d", `"ranges":[[{"subnet":"10.1.0.0/24","rangeEnd":"10.1.0.100"}],[{"subnet":"fd00::/120"}]]`)
	tests := []struct {
		args, want, wantErr string
	}{
		{args: "IP=fd00::5", want: "invalid IP fd00::5"},
		{args: "IP=10.1.0.5,fd00::5", want: "10.1.0.5 fd00::5"},
		{args: "IP=10.1.0.200", wantErr: "requested IP 10.1.0.200 is outside every range (10.1.0.1-10.1.0.100; fd00::1-fd00::ff)"},
		{args: "IP=10.1.0.5,10.1.0.6", wantErr: "requested IPs 10.1.0.5 and 10.1.0.6 are both in range set 0"},
	}
	for _, tt := range tests {
		c, err := loadConfig([]byte(in), tt.args)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.requestedPerSet()
		if tt.wantErr != "" {
			var ne *netconf.Error
			if !errors.As(err, &ne) || ne.Code != netconf.CodeInvalidConfig || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || fmt.Sprint(got[0], " ", got[1]) != tt.want {
			t.Errorf("%s: got %v, %v; want %s", tt.args, got, err, tt.want)
		}
	}
}

func TestParseResolvConf(t *testing.T) {
	in := "# comment\n; other comment\nnameserver 10.0.0.10\nnameserver fd00::10\ndomain example.com\nsearch a.example b.example\noptions ndots:5 edns0\nsearch c.example\nbogus\n"
	dns, err := parseResolvConf(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(dns.Nameservers, dns.Domain, dns.Search, dns.Options)
	if want := "[10.0.0.10 fd00::10]example.com[a.example b.example c.example] [ndots:5 edns0]"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(conf("/d", `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]],"routes":[{"dst":"0.0.0.0/0"}]`, `"runtimeConfig":{"ips":["10.1.0.5"]}`)), "IP=10.1.0.6")
	f.Add([]byte(conf("/d", `"subnet":"10.1.0.0/24","rangeStart":"10.1.0.9","rangeEnd":"10.1.0.2"`)), "")
	f.Add([]byte(`{"name":"n","type":"t","ipam":{"ranges":[[{"subnet":"fd00::/64","gateway":"fd00::1%x"}]]}}`), "IP=;")
	f.Fuzz(func(t *testing.T, data []byte, args string) {
		c, err := loadConfig(data, args)
		if err != nil {
			var ne *netconf.Error
			if !errors.As(err, &ne) {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		if len(c.sets) == 0 {
			t.Fatal("accepted a configuration without ranges")
		}
		for _, s := range c.sets {
			for _, r := range s {
				if !r.Subnet.Contains(r.Gateway) || r.Start.Compare(r.End) > 0 {
					t.Fatalf("accepted inconsistent range %+v", r)
				}
			}
		}
		per, err := c.requestedPerSet()
		if err == nil && len(per) != len(c.sets) {
			t.Fatal("requestedPerSet lost sets")
		}
	})
}
