package hostdevice

import (
	"testing"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
)

// TestLoadConf: malformed configurations and their codes, before anything
// is looked up.
func TestLoadConf(t *testing.T) {
	const base = `"cniVersion":"1.1.0","name":"n","type":"host-device"`
	for _, tc := range []struct {
		name, conf string
		code       uint // 0: accepted
	}{
		{"device", `{` + base + `,"device":"eth1"}`, 0},
		{"no key: left to ADD (deviceID comes at runtime)", `{` + base + `}`, 0},
		{"not JSON", `{` + base, netconf.CodeDecoding},
		{"device not a string", `{` + base + `,"device":1}`, netconf.CodeDecoding},
		{"device too long", `{` + base + `,"device":"abcdefghijklmnop"}`, netconf.CodeInvalidConfig},
		{"device with a slash", `{` + base + `,"device":"a/b"}`, netconf.CodeInvalidConfig},
		{"hwaddr not a MAC", `{` + base + `,"hwaddr":"zz"}`, netconf.CodeInvalidConfig},
		{"kernelpath relative", `{` + base + `,"kernelpath":"devices/pci0000:00"}`, netconf.CodeInvalidConfig},
		{"kernelpath outside /sys/devices", `{` + base + `,"kernelpath":"/sys/devices/../class"}`, netconf.CodeInvalidConfig},
		{"pciBusID leaving the bus", `{` + base + `,"pciBusID":"../../x"}`, netconf.CodeInvalidConfig},
		{"deviceID leaving the bus", `{` + base + `,"runtimeConfig":{"deviceID":".."}}`, netconf.CodeInvalidConfig},
		{"no name", `{"cniVersion":"1.1.0","type":"host-device","device":"eth1"}`, netconf.CodeInvalidConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConf([]byte(tc.conf), "")
			if got := cniplugin.ToCNIError(err); (err == nil) != (tc.code == 0) || (err != nil && got.Code != tc.code) {
				t.Errorf("loadConf = %v, want code %d", err, tc.code)
			}
		})
	}
}

func FuzzLoadConf(f *testing.F) {
	f.Add(`{"cniVersion":"1.1.0","name":"n","type":"host-device","hwaddr":"02:00:00:00:00:01","pciBusID":"0000:00:03.0"}`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := loadConf([]byte(s), "")
		if err == nil && (!validBusAddr(c.PCIAddr) || !validIfName(c.Device)) {
			t.Errorf("accepted %q", s)
		}
	})
}
