package macvlan

import (
	"net"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
)

// NetConf is the macvlan plugin's configuration: the reference's keys
// (master, mode, mtu, mac, linkInContainer, bcqueuelen) plus enabledad,
// which the bridge plugin also has.
type NetConf struct {
	netconf.Base
	Master     string `json:"master"`
	Mode       string `json:"mode"`
	MTU        int    `json:"mtu"`
	Mac        string `json:"mac,omitempty"`
	LinkContNs bool   `json:"linkInContainer,omitempty"`
	BCQueueLen uint32 `json:"bcqueuelen,omitempty"`
	EnableDad  bool   `json:"enabledad,omitempty"`
	containerif.MACArgs

	mode netlink.MacvlanMode
	mac  net.HardwareAddr // chosen from runtimeConfig, args, CNI_ARGS and "mac"
}

// loadConf parses stdin and CNI_ARGS and checks every key that can be
// checked without the kernel, so that a bad configuration fails before
// anything is created. The master is resolved later, and only by the verbs
// that need it: DEL never does.
func loadConf(stdin []byte, cniArgs string) (*NetConf, error) {
	c := &NetConf{}
	if err := netconf.Load(stdin, c); err != nil {
		return nil, err
	}
	mode, ok := link.ParseMacvlanMode(c.Mode)
	if !ok {
		return nil, netconf.Invalid("unknown macvlan \"mode\" %q; use bridge (the default), private, vepa or passthru", c.Mode)
	}
	c.mode = mode
	if err := c.validate(); err != nil {
		return nil, err
	}
	var err error
	// The reference's order, with args.cni.mac slotted where its bridge has it.
	if c.mac, err = c.PickMAC(cniArgs, c.Mac); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *NetConf) validate() error {
	switch {
	case c.MTU < 0 || c.MTU > 65535 || (c.MTU > 0 && c.MTU < 68):
		return netconf.Invalid("\"mtu\" %d must be between 68 and the master's MTU, or 0 to inherit the master's", c.MTU)
	case !validIfName(c.Master):
		return netconf.Invalid("\"master\" %q is not an interface name (at most 15 characters, no '/', ':' or spaces); name the node's uplink, or leave it out to use the interface of the default route", c.Master)
	}
	return nil
}

// validIfName accepts what the kernel accepts as a link name (dev_valid_name);
// empty is allowed and means "the default route's interface".
func validIfName(s string) bool {
	if s == "" {
		return true
	}
	return len(s) <= 15 && s != "." && s != ".." && !strings.ContainsAny(s, "/: \t\n\r\v\f")
}
