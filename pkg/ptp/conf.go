package ptp

import (
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
)

// NetConf is the ptp plugin's configuration, key for key the reference's.
type NetConf struct {
	netconf.Base
	IPMasq        bool    `json:"ipMasq"`
	IPMasqBackend *string `json:"ipMasqBackend,omitempty"`
	MTU           int     `json:"mtu"`

	masq masq.Backend // what ADD masquerades with, when ipMasq is set
}

// loadConf parses stdin and checks every key, so that a bad configuration
// fails before anything is created. ptp has no CNI_ARGS of its own.
func loadConf(stdin []byte, _ string) (*NetConf, error) {
	c := &NetConf{}
	if err := netconf.Load(stdin, c); err != nil {
		return nil, err
	}
	switch {
	case c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535):
		return nil, netconf.Invalid("\"mtu\" %d must be between 68 and 65535, or 0 for the kernel default", c.MTU)
	case c.IPAM.Type == "":
		// The routes and the host side's address are made of IPAM's gateway.
		return nil, netconf.Required("\"ipam\"", "ptp routes the pod's addresses through the host side, so it needs an IPAM plugin (e.g. {\"type\": \"host-local\", \"ranges\": [[{\"subnet\": \"10.1.1.0/24\"}]]})")
	}
	var err error
	if c.masq, err = masq.Choose(c.IPMasq, c.IPMasqBackend); err != nil {
		return nil, err
	}
	return c, nil
}
