package tap

import (
	"net"
	"strings"

	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/netconf"
)

// NetConf is the tap plugin's configuration: the reference's keys.
type NetConf struct {
	netconf.Base
	MultiQueue     bool    `json:"multiQueue"`
	MTU            int     `json:"mtu"`
	Mac            string  `json:"mac,omitempty"`
	Owner          *uint32 `json:"owner,omitempty"`
	Group          *uint32 `json:"group,omitempty"`
	SelinuxContext string  `json:"selinuxContext,omitempty"`
	Bridge         string  `json:"bridge,omitempty"`
	containerif.MACArgs

	mac net.HardwareAddr // chosen from runtimeConfig, args, CNI_ARGS and "mac"
}

// loadConf parses stdin and CNI_ARGS and checks every key, so that a bad
// configuration fails before anything is created.
func loadConf(stdin []byte, cniArgs string) (*NetConf, error) {
	c := &NetConf{}
	if err := netconf.Load(stdin, c); err != nil {
		return nil, err
	}
	switch {
	case c.MTU < 0 || c.MTU > 65535 || (c.MTU > 0 && c.MTU < 68):
		return nil, netconf.Invalid("\"mtu\" %d must be between 68 and 65535, or 0 for the kernel's default (1500)", c.MTU)
	case c.Bridge != "" && (len(c.Bridge) > 15 || strings.ContainsAny(c.Bridge, "/: \t\n\r\v\f")):
		return nil, netconf.Invalid("\"bridge\" %q is not an interface name (at most 15 characters, no '/', ':' or spaces); name a bridge of the container's namespace", c.Bridge)
	case c.Owner != nil && *c.Owner == noID, c.Group != nil && *c.Group == noID:
		return nil, netconf.Invalid("\"owner\" and \"group\" must be a user and group id below %d; leave a key out for none", noID)
	}
	var err error
	// The reference's order (runtimeConfig, CNI_ARGS, "mac"), with args.cni.mac where bridge has it.
	if c.mac, err = c.PickMAC(cniArgs, c.Mac); err != nil {
		return nil, err
	}
	return c, nil
}

// noID is the kernel's "no owner" (and "no group") of a tap: (uid_t)-1.
const noID = ^uint32(0)
