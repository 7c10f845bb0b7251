package bridge

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cnisuite/cni/pkg/netconf"
)

func TestLoadConf(t *testing.T) {
	base := `"cniVersion":"1.1.0","name":"n","type":"bridge"`
	tests := []struct {
		name, conf, args string
		code             uint // 0: valid
		check            func(*NetConf) bool
	}{
		{"defaults", `{` + base + `}`, "", 0, func(c *NetConf) bool { return c.BrName == "cni0" && !c.IsGW && c.mac == nil }},
		{"isDefaultGateway implies isGateway", `{` + base + `,"isDefaultGateway":true}`, "", 0, func(c *NetConf) bool { return c.IsGW }},
		{"trunk expanded and sorted", `{` + base + `,"vlanTrunk":[{"id":20},{"minID":5,"maxID":7},{"id":6}]}`, "", 0,
			func(c *NetConf) bool { return len(c.vlans) == 4 && c.vlans[0] == 5 && c.vlans[3] == 20 }},
		{"mac precedence", `{` + base + `,"args":{"cni":{"mac":"02:00:00:00:00:02"}},"runtimeConfig":{"mac":"02:00:00:00:00:03"}}`, "MAC=02:00:00:00:00:01", 0,
			func(c *NetConf) bool { return c.mac.String() == "02:00:00:00:00:03" }},
		{"mac from CNI_ARGS", `{` + base + `}`, "K8S_POD_NAME=x;MAC=02:00:00:00:00:01", 0, func(c *NetConf) bool { return c.mac.String() == "02:00:00:00:00:01" }},
		{"bad vlan", `{` + base + `,"vlan":4095}`, "", 7, nil},
		{"trunk min without max", `{` + base + `,"vlanTrunk":[{"minID":5}]}`, "", 7, nil},
		{"trunk reversed", `{` + base + `,"vlanTrunk":[{"minID":9,"maxID":5}]}`, "", 7, nil},
		{"trunk id 0", `{` + base + `,"vlanTrunk":[{"id":0}]}`, "", 7, nil},
		{"hairpin and promisc", `{` + base + `,"hairpinMode":true,"promiscMode":true}`, "", 7, nil},
		{"ipam without container interface", `{` + base + `,"disableContainerInterface":true,"ipam":{"type":"host-local"}}`, "", 7, nil},
		{"bad mtu", `{` + base + `,"mtu":20}`, "", 7, nil},
		{"long bridge name", `{` + base + `,"bridge":"abcdefghijklmnop"}`, "", 7, nil},
		{"nftables backend", `{` + base + `,"ipMasq":true,"ipMasqBackend":"nftables"}`, "", 0, func(c *NetConf) bool { return c.masq.Name == "nftables" }},
		{"unknown backend without ipMasq, as the reference", `{` + base + `,"ipMasqBackend":"ipfw"}`, "", 0, func(c *NetConf) bool { return c.masq.Name == "" }},
		{"iptables backend", `{` + base + `,"ipMasq":true,"ipMasqBackend":"iptables"}`, "", 0, func(c *NetConf) bool { return c.masq.Name == "iptables" }},
		{"unknown backend", `{` + base + `,"ipMasq":true,"ipMasqBackend":"ipfw"}`, "", netconf.CodeUnsupportedField, nil},
		{"empty backend", `{` + base + `,"ipMasq":true,"ipMasqBackend":""}`, "", netconf.CodeUnsupportedField, nil},
		{"multicast mac", `{` + base + `,"runtimeConfig":{"mac":"01:00:5e:00:00:01"}}`, "", 7, nil},
		{"bad CNI_ARGS mac", `{` + base + `}`, "MAC=zz", 4, nil},
		{"malformed CNI_ARGS", `{` + base + `}`, "novalue", 4, nil},
		{"no name", `{"cniVersion":"1.1.0","type":"bridge"}`, "", 7, nil},
		{"not JSON", `{`, "", 6, nil},
		{"wrong type", `{` + base + `,"mtu":"big"}`, "", 6, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConf([]byte(tt.conf), tt.args)
			if tt.code == 0 {
				if err != nil || !tt.check(c) {
					t.Fatalf("loadConf = %+v, %v", c, err)
				}
				return
			}
			var ne *netconf.Error
			if !errors.As(err, &ne) || ne.Code != tt.code {
				t.Fatalf("loadConf error %v, want code %d", err, tt.code)
			}
		})
	}
}

// TestDefaultMasqBackend: without ipMasqBackend, iptables when
// iptables-restore is in PATH, else nftables, as in the reference.
func TestDefaultMasqBackend(t *testing.T) {
	conf := []byte(`{"cniVersion":"1.1.0","name":"n","type":"bridge","ipMasq":true}`)
	withIPT := t.TempDir()
	if err := os.WriteFile(filepath.Join(withIPT, "iptables-restore"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{withIPT: "iptables", t.TempDir(): "nftables"} {
		t.Setenv("PATH", dir)
		c, err := loadConf(conf, "")
		if err != nil {
			t.Fatal(err)
		}
		if c.masq.Name != want {
			t.Errorf("PATH with iptables-restore: %v; backend %q, want %q", dir == withIPT, c.masq.Name, want)
		}
	}
}

// FuzzLoadConf feeds arbitrary configurations and CNI_ARGS: loadConf must
// never panic, and whatever it accepts must be within the documented bounds.
func FuzzLoadConf(f *testing.F) {
	f.Add(`{"cniVersion":"1.1.0","name":"n","type":"bridge","vlanTrunk":[{"minID":1,"maxID":4094}]}`, "MAC=02:00:00:00:00:01")
	f.Add(`{"name":"n","type":"bridge","isDefaultGateway":true,"mtu":1450,"ipam":{"type":"host-local"}}`, "")
	f.Add(`{"name":"n","type":"bridge","runtimeConfig":{"mac":"x"},"args":{"cni":{"mac":"02:00:00:00:00:01"}}}`, "a=b;;c")
	f.Add(`{"name":"n","type":"bridge","ipMasq":true,"ipMasqBackend":"nftables"}`, "")
	f.Fuzz(func(t *testing.T, conf, args string) {
		c, err := loadConf([]byte(conf), args)
		if err != nil {
			var ne *netconf.Error
			if !errors.As(err, &ne) {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		if c.Vlan < 0 || c.Vlan > 4094 || len(c.vlans) > 4094 || c.BrName == "" || (c.IsDefaultGW && !c.IsGW) {
			t.Fatalf("accepted out-of-bounds configuration %+v", c)
		}
	})
}
