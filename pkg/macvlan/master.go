package macvlan

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// masterNS says where the master is looked up, for messages.
func (c *NetConf) masterNS() string {
	if c.LinkContNs {
		return "the container's namespace"
	}
	return "the node's namespace"
}

// findMaster resolves the master in the namespace of the calling thread:
// the named link, or without a name the link of the default route.
func (c *NetConf) findMaster() (netlink.Link, error) {
	if c.Master == "" {
		l, err := link.DefaultRouteLink()
		if errors.Is(err, link.ErrNoDefaultRoute) {
			return nil, netconf.Invalid("no \"master\" is set and %s has no default route to take one from; set \"master\" to the uplink's name", c.masterNS())
		}
		return l, err
	}
	l, err := netlink.LinkByName(c.Master)
	if link.IsNotFound(err) {
		return nil, netconf.Invalid("master %q does not exist in %s; set \"master\" to an interface of `ip link show` there", c.Master, c.masterNS())
	}
	if err != nil {
		return nil, fmt.Errorf("looking up master %q: %w", c.Master, err)
	}
	return l, nil
}

// resolveMaster finds the master where the configuration says it is: in
// the container (linkInContainer) or in the namespace the plugin runs in.
func (c *NetConf) resolveMaster(container *os.File) (netlink.Link, error) {
	if !c.LinkContNs {
		return c.findMaster()
	}
	var m netlink.Link
	err := netns.DoFile(container, func() error {
		var err error
		m, err = c.findMaster()
		return err
	})
	return m, err
}

// status is macvlan's part of STATUS: an ADD needs the master (a master
// inside containers cannot be checked without one). A missing master is
// code 50, "not available".
func status(c *NetConf) error {
	if c.LinkContNs {
		return nil
	}
	if _, err := c.findMaster(); err != nil {
		return netconf.Errorf(netconf.CodeUnavailable, "macvlan cannot attach pods: %w", err)
	}
	return nil
}
