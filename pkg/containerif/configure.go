// Package containerif is what every interface plugin (bridge, macvlan, and
// the next ones: ptp, host-device, tap, ipvlan-like links) does with its
// interface in the container, as the reference's ipam.ConfigureIface serves
// eight plugins: the configuration of the interface from a result (sysctls,
// addresses, link up, DAD settling, routes), the DNS a result carries, the
// keys through which a runtime asks for a MAC, and the frame of ADD, CHECK
// and DEL around a plugin's own part (Add with its IPAM half, Check, Del
// with the order of the IPAM release and the link's removal). A plugin
// keeps only its differences: how it makes its link and what it sets up on
// the node.
//
// Named for what it configures, the interface in the container (the CNI
// spec's word for the sandbox, whichever runtime made it). It must not
// import a plugin package, print, or know how a link is made.
package containerif

import (
	"fmt"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
)

// Options is what a plugin adds to the configuration of its interface.
type Options struct {
	// DAD keeps IPv6 duplicate address detection on ("enabledad"); off, the
	// addresses are usable at once, since IPAM hands out each one once.
	DAD bool
	// NDiscNotify makes the kernel announce the IPv6 addresses when the
	// link comes up, as arp_notify does the IPv4 ones: what the reference
	// sets for links with a MAC of their own on the wire (macvlan, ipvlan).
	NDiscNotify bool
	// UpError, when set, gives a failure to bring the link up the plugin's
	// own error (macvlan: a MAC a sibling holds, which the kernel checks
	// only then), or nil to have it wrapped as any other.
	UpError func(l netlink.Link, err error) error
}

// Configure runs inside the container and applies res to ifName: with no
// address (L2 mode) it only brings the link up, as the reference does;
// otherwise the sysctls, the addresses, link up (after them, so that the
// kernel announces them), the wait for IPv6 addresses to leave DAD, and the
// routes, a route without a gateway going via its family's first gateway.
// IPv6 on a link below 1280 bytes is refused first, with code 7, rather
// than with the kernel's "invalid argument" half-way.
func Configure(ifName string, res *current.Result, o Options) error {
	l, err := link.ByName(ifName)
	if err != nil {
		return err
	}
	return configureLink(l, res, o)
}

// configureLink is Configure of the link l.
func configureLink(l netlink.Link, res *current.Result, o Options) error {
	ifName := l.Attrs().Name
	if len(res.IPs) == 0 {
		return up(l, o)
	}
	hasV6 := slices.ContainsFunc(res.IPs, func(ipc *current.IPConfig) bool { return family.OfIP(ipc.Address.IP) == family.IPv6 })
	if mtu := l.Attrs().MTU; hasV6 && mtu < minIPv6MTU {
		return netconf.Invalid("%q has MTU %d, below %d, the least IPv6 works with, and IPAM returned an IPv6 address; raise \"mtu\" (or that of the link it inherits from) or give this network IPv4 ranges only", ifName, mtu, minIPv6MTU)
	}
	for _, s := range sysctls(ifName, hasV6, o) {
		// Failures ignored: the IPv6 keys are missing when the kernel has
		// IPv6 disabled (the reference skips them then too), and adding an
		// IPv6 address then says so.
		_ = link.Sysctl(s.key, s.value)
	}
	gwOf, err := link.AddAddrs(l, res.IPs, o.DAD)
	if err != nil {
		return err
	}
	if err := up(l, o); err != nil {
		return err
	}
	if hasV6 {
		if err := link.SettleDAD(l); err != nil {
			return err
		}
	}
	return link.AddRoutes(l, res.Routes, gwOf)
}

// minIPv6MTU is the smallest MTU on which the kernel enables IPv6 (RFC 8200).
const minIPv6MTU = 1280

func up(l netlink.Link, o Options) error {
	err := netlink.LinkSetUp(l)
	if err != nil && o.UpError != nil {
		if mine := o.UpError(l, err); mine != nil {
			return mine
		}
	}
	if err != nil {
		return fmt.Errorf("setting %q up: %w", l.Attrs().Name, err)
	}
	return nil
}

type sysctl struct{ key, value string }

// sysctls lists what Configure sets, in order: what the reference sets
// (ipam.ConfigureIface's IPv6 keys, on lo too, when the result has IPv6;
// arp_notify; ndisc_notify where the plugin asks) and the DAD choice,
// which the reference's bridge sets whatever the families.
func sysctls(ifName string, hasV6 bool, o Options) []sysctl {
	v4, v6 := "net/ipv4/conf/"+ifName+"/", "net/ipv6/conf/"+ifName+"/"
	var s []sysctl
	if hasV6 {
		s = append(s, sysctl{"net/ipv6/conf/lo/disable_ipv6", "0"}, sysctl{v6 + "disable_ipv6", "0"}, sysctl{v6 + "keep_addr_on_down", "1"})
	}
	if o.DAD {
		s = append(s, sysctl{v6 + "enhanced_dad", "1"}, sysctl{v6 + "accept_dad", "1"})
	} else {
		s = append(s, sysctl{v6 + "accept_dad", "0"})
	}
	s = append(s, sysctl{v4 + "arp_notify", "1"})
	if o.NDiscNotify {
		s = append(s, sysctl{v6 + "ndisc_notify", "1"})
	}
	return s
}

// DNS is the DNS a result carries: the configuration's when it sets any of
// its keys, else IPAM's (the reference's bridge and ptp choice; its
// macvlan drops IPAM's).
func DNS(conf, ipam types.DNS) types.DNS {
	if conf.Nameservers != nil || conf.Search != nil || conf.Options != nil || conf.Domain != "" {
		return conf
	}
	return ipam
}
