package containerif

import (
	"net"

	"github.com/cnisuite/cni/pkg/netconf"
)

// MACArgs are the keys through which a runtime asks for the container's
// MAC. A plugin's configuration embeds it; one that reads more of "args"
// or "runtimeConfig" declares those keys itself and passes their MAC to
// netconf.PickMAC instead.
type MACArgs struct {
	Args struct {
		Cni struct {
			Mac string `json:"mac,omitempty"`
		} `json:"cni"`
	} `json:"args"`
	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig"`
}

// PickMAC applies the reference's precedence: runtimeConfig.mac over
// args.cni.mac over CNI_ARGS MAC=, then the plugin's own "mac" key, given
// as confMAC ("" for none, or a plugin without the key). It returns nil
// when none asks for a MAC.
func (m *MACArgs) PickMAC(cniArgs, confMAC string) (net.HardwareAddr, error) {
	kv, err := netconf.ParseArgs(cniArgs)
	if err != nil {
		return nil, err
	}
	return netconf.PickMAC(
		netconf.MACSource{Name: "runtimeConfig.mac", Value: m.RuntimeConfig.Mac},
		netconf.MACSource{Name: "args.cni.mac", Value: m.Args.Cni.Mac},
		netconf.MACSource{Name: "CNI_ARGS MAC", Value: kv["MAC"], FromEnv: true},
		netconf.MACSource{Name: `"mac"`, Value: confMAC})
}
