package macvlan

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/netconf"
)

func TestLoadConf(t *testing.T) {
	base := `"cniVersion":"1.1.0","name":"n","type":"macvlan"`
	tests := []struct {
		name, conf, args string
		code             uint // 0: valid
		check            func(*NetConf) bool
	}{
		{"defaults", `{` + base + `}`, "", 0, func(c *NetConf) bool {
			return c.Master == "" && c.mode == netlink.MACVLAN_MODE_BRIDGE && c.mac == nil && c.MTU == 0 && !c.LinkContNs
		}},
		{"every key", `{` + base + `,"master":"eth1","mode":"passthru","mtu":1400,"linkInContainer":true,"bcqueuelen":2000,"enabledad":true}`, "", 0,
			func(c *NetConf) bool {
				return c.Master == "eth1" && c.mode == netlink.MACVLAN_MODE_PASSTHRU && c.MTU == 1400 && c.LinkContNs && c.BCQueueLen == 2000 && c.EnableDad
			}},
		{"private", `{` + base + `,"mode":"private"}`, "", 0, func(c *NetConf) bool { return c.mode == netlink.MACVLAN_MODE_PRIVATE }},
		{"vepa", `{` + base + `,"mode":"vepa"}`, "", 0, func(c *NetConf) bool { return c.mode == netlink.MACVLAN_MODE_VEPA }},
		{"mac key", `{` + base + `,"mac":"02:00:00:00:00:04"}`, "", 0, func(c *NetConf) bool { return c.mac.String() == "02:00:00:00:00:04" }},
		{"CNI_ARGS over mac key", `{` + base + `,"mac":"02:00:00:00:00:04"}`, "IgnoreUnknown=1;MAC=02:00:00:00:00:01", 0,
			func(c *NetConf) bool { return c.mac.String() == "02:00:00:00:00:01" }},
		{"args over CNI_ARGS", `{` + base + `,"mac":"02:00:00:00:00:04","args":{"cni":{"mac":"02:00:00:00:00:02"}}}`, "MAC=02:00:00:00:00:01", 0,
			func(c *NetConf) bool { return c.mac.String() == "02:00:00:00:00:02" }},
		{"runtimeConfig over all", `{` + base + `,"mac":"02:00:00:00:00:04","args":{"cni":{"mac":"02:00:00:00:00:02"}},"runtimeConfig":{"mac":"02:00:00:00:00:03"}}`, "MAC=02:00:00:00:00:01", 0,
			func(c *NetConf) bool { return c.mac.String() == "02:00:00:00:00:03" }},
		{"unknown CNI_ARGS kept aside", `{` + base + `}`, "K8S_POD_NAME=x;K8S_POD_NAMESPACE=y", 0, func(c *NetConf) bool { return c.mac == nil }},
		{"bad mode", `{` + base + `,"mode":"source"}`, "", 7, nil},
		{"mode not a string", `{` + base + `,"mode":1}`, "", 6, nil},
		{"negative mtu", `{` + base + `,"mtu":-1}`, "", 7, nil},
		{"tiny mtu", `{` + base + `,"mtu":20}`, "", 7, nil},
		{"huge mtu", `{` + base + `,"mtu":70000}`, "", 7, nil},
		{"long master", `{` + base + `,"master":"abcdefghijklmnop"}`, "", 7, nil},
		{"master with a slash", `{` + base + `,"master":"eth/0"}`, "", 7, nil},
		{"master ..", `{` + base + `,"master":".."}`, "", 7, nil},
		{"negative bcqueuelen", `{` + base + `,"bcqueuelen":-1}`, "", 6, nil},
		{"multicast mac", `{` + base + `,"mac":"01:00:5e:00:00:01"}`, "", 7, nil},
		{"zero mac", `{` + base + `,"runtimeConfig":{"mac":"00:00:00:00:00:00"}}`, "", 7, nil},
		{"long mac", `{` + base + `,"args":{"cni":{"mac":"02:00:00:00:00:00:00:01"}}}`, "", 7, nil},
		{"bad CNI_ARGS mac", `{` + base + `}`, "MAC=zz", 4, nil},
		{"malformed CNI_ARGS", `{` + base + `}`, "novalue", 4, nil},
		{"no type", `{"cniVersion":"1.1.0","name":"n"}`, "", 7, nil},
		{"not JSON", `{`, "", 6, nil},
		{"linkInContainer not a bool", `{` + base + `,"linkInContainer":"yes"}`, "", 6, nil},
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

// FuzzLoadConf feeds arbitrary configurations and CNI_ARGS: loadConf must
// never panic, every error must carry a CNI code, and whatever it accepts
// must be within the documented bounds.
func FuzzLoadConf(f *testing.F) {
	f.Add(`{"cniVersion":"1.1.0","name":"n","type":"macvlan","master":"eth0","mode":"vepa","mtu":1400}`, "MAC=02:00:00:00:00:01")
	f.Add(`{"name":"n","type":"macvlan","linkInContainer":true,"bcqueuelen":5,"ipam":{"type":"host-local"}}`, "")
	f.Add(`{"name":"n","type":"macvlan","mac":"x","runtimeConfig":{"mac":"02:00:00:00:00:01"}}`, "a=b;;c")
	f.Fuzz(func(t *testing.T, conf, args string) {
		c, err := loadConf([]byte(conf), args)
		if err != nil {
			var ne *netconf.Error
			if !errors.As(err, &ne) {
				t.Fatalf("error without a CNI code: %v", err)
			}
			return
		}
		modeOK := c.mode >= netlink.MACVLAN_MODE_PRIVATE && c.mode <= netlink.MACVLAN_MODE_PASSTHRU
		macOK := c.mac == nil || (len(c.mac) == 6 && c.mac[0]&1 == 0)
		if !modeOK || !macOK || c.MTU < 0 || c.MTU > 65535 || !validIfName(c.Master) || c.Name == "" || c.Type == "" {
			t.Fatalf("accepted out-of-bounds configuration %+v", c)
		}
	})
}
