package bridge

import (
	"net"
	"slices"

	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
)

// DefaultName is the bridge the plugin uses when the configuration names
// none (the reference plugin's default). Declared here, by the plugin whose
// default it is; the flannel plugin and cnictl use it too.
const DefaultName = "cni0"

// NetConf is the bridge plugin's configuration, key for key the reference's.
type NetConf struct {
	netconf.Base
	BrName                    string       `json:"bridge"`
	IsGW                      bool         `json:"isGateway"`
	IsDefaultGW               bool         `json:"isDefaultGateway"`
	ForceAddress              bool         `json:"forceAddress"`
	IPMasq                    bool         `json:"ipMasq"`
	IPMasqBackend             *string      `json:"ipMasqBackend,omitempty"`
	MTU                       int          `json:"mtu"`
	HairpinMode               bool         `json:"hairpinMode"`
	PromiscMode               bool         `json:"promiscMode"`
	Vlan                      int          `json:"vlan"`
	VlanTrunk                 []*VlanTrunk `json:"vlanTrunk,omitempty"`
	PreserveDefaultVlan       bool         `json:"preserveDefaultVlan"`
	MacSpoofChk               bool         `json:"macspoofchk,omitempty"`
	EnableDad                 bool         `json:"enabledad,omitempty"`
	DisableContainerInterface bool         `json:"disableContainerInterface,omitempty"`
	PortIsolation             bool         `json:"portIsolation,omitempty"`
	containerif.MACArgs

	mac   net.HardwareAddr // chosen from CNI_ARGS, args and runtimeConfig
	vlans []int            // vlanTrunk expanded, sorted, unique
	masq  masq.Backend     // what ADD masquerades with, when ipMasq is set
}

// VlanTrunk is one entry of vlanTrunk: an id, or a minID..maxID range.
type VlanTrunk struct {
	MinID *int `json:"minID,omitempty"`
	MaxID *int `json:"maxID,omitempty"`
	ID    *int `json:"id,omitempty"`
}

// loadConf parses stdin and CNI_ARGS and checks every key, so that a bad
// configuration fails before anything is created.
func loadConf(stdin []byte, cniArgs string) (*NetConf, error) {
	c := &NetConf{BrName: DefaultName}
	if err := netconf.Load(stdin, c); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	var err error
	if c.masq, err = masq.Choose(c.IPMasq, c.IPMasqBackend); err != nil {
		return nil, err
	}
	vlans, err := expandTrunk(c.VlanTrunk)
	if err != nil {
		return nil, err
	}
	c.vlans = vlans
	if c.mac, err = c.PickMAC(cniArgs, ""); err != nil {
		return nil, err
	}
	if c.IsDefaultGW {
		c.IsGW = true // a default route needs the gateway address on the bridge
	}
	return c, nil
}

func (c *NetConf) validate() error {
	switch {
	case c.BrName == "" || len(c.BrName) > 15:
		return netconf.Invalid("\"bridge\" %q must be 1 to 15 characters (a Linux interface name)", c.BrName)
	case c.Vlan < 0 || c.Vlan > 4094:
		return netconf.Invalid("invalid VLAN ID %d (must be between 0 and 4094)", c.Vlan)
	case c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535):
		return netconf.Invalid("\"mtu\" %d must be between 68 and 65535, or 0 for the kernel default", c.MTU)
	case c.HairpinMode && c.PromiscMode:
		return netconf.Invalid("cannot set hairpin mode and promiscuous mode at the same time; choose one of \"hairpinMode\" and \"promiscMode\"")
	case c.IPAM.Type != "" && c.DisableContainerInterface:
		return netconf.Invalid("cannot use IPAM when \"disableContainerInterface\" is set: addresses need the container interface up; drop one of the two")
	}
	return nil
}

// expandTrunk turns vlanTrunk into a sorted list of unique VLAN IDs.
func expandTrunk(trunk []*VlanTrunk) ([]int, error) {
	seen := map[int]bool{}
	for _, t := range trunk {
		if t == nil {
			continue
		}
		if (t.MinID == nil) != (t.MaxID == nil) {
			return nil, netconf.Invalid("vlanTrunk: minID and maxID must be set together")
		}
		if t.MinID != nil {
			lo, hi := *t.MinID, *t.MaxID
			if !validVID(lo) || !validVID(hi) || hi < lo {
				return nil, netconf.Invalid("vlanTrunk: range %d-%d must lie within 1-4094 with minID <= maxID", lo, hi)
			}
			for v := lo; v <= hi; v++ {
				seen[v] = true
			}
		}
		if t.ID != nil {
			if !validVID(*t.ID) {
				return nil, netconf.Invalid("vlanTrunk: id %d must be between 1 and 4094", *t.ID)
			}
			seen[*t.ID] = true
		}
	}
	vlans := make([]int, 0, len(seen))
	for v := range seen {
		vlans = append(vlans, v)
	}
	slices.Sort(vlans)
	return vlans, nil
}

func validVID(v int) bool { return v >= 1 && v <= 4094 }
