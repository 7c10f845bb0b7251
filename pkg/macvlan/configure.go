package macvlan

import (
	"errors"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/netconf"
)

// ifOptions is how the macvlan is configured in the container: as the
// reference does, with ndisc_notify, so that the segment learns the new
// MAC of the IPv6 addresses at once, as arp_notify has it learn the IPv4
// ones; IPv6 duplicate address detection stays off unless enabledad asks
// for it (IPAM hands out each address once, and DAD would hold the address
// back for a second or two).
func (c *NetConf) ifOptions() containerif.Options {
	return containerif.Options{DAD: c.EnableDad, NDiscNotify: true, UpError: macTaken}
}

// macTaken explains the one refusal of link up that is macvlan's: two
// macvlans of one master may exist with the same MAC, but only one may be
// up, and the kernel checks only then.
func macTaken(l netlink.Link, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return netconf.Invalid("MAC %s is already used by another macvlan on the same master; request another MAC or none: %w", l.Attrs().HardwareAddr, err)
	}
	return nil
}
