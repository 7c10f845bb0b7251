// Package dhcp is the dhcp IPAM plugin's daemon, `dhcp daemon`: it answers
// the plugin (pkg/dhcp/dhcpclient) on a unix socket in the reference's
// net/rpc protocol (so either side may be the reference's), runs the DHCP
// client inside the pod's network namespace, keeps renewing the lease,
// saves it so that a restarted daemon carries on, and releases it on DEL,
// from the daemon's own namespace once the pod's is gone.
//
// It must not import another plugin's package or pkg/link: it hands out
// addresses and never configures a link.
package dhcp

import (
	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
)

// DefaultSocketPath is where the daemon listens unless told otherwise.
const DefaultSocketPath = dhcpclient.DefaultSocketPath

// netConf is an attachment's configuration as the daemon uses it: the
// plugin's, with its options as the DHCP library sends them.
type netConf struct {
	*dhcpclient.Conf
	opts []dhcpv4.Option
}

// load reads the configuration and options as the plugin does (it checked
// them before asking; a reference plugin may not have).
func load(stdin []byte, cniArgs string) (*netConf, error) {
	c, err := dhcpclient.Load(stdin, cniArgs)
	if err != nil {
		return nil, err
	}
	opts := make([]dhcpv4.Option, 0, len(c.Options))
	for _, o := range c.Options {
		opts = append(opts, dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(o.Code), o.Value))
	}
	return &netConf{Conf: c, opts: opts}, nil
}

// clientID identifies the attachment to the DHCP server, built as the
// reference builds it, so that a lease survives a switch between the two:
// containerID/network/ifname, cut to the 254 bytes an option holds.
func clientID(containerID, network, ifName string) string {
	id := containerID + "/" + network + "/" + ifName
	if len(id) > 254 {
		id = id[:254]
	}
	return id
}
