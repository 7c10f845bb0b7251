package main

import (
	"errors"
	"fmt"
	"slices"
	"syscall"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
)

// configure runs inside the container: it records the macvlan's MAC in
// res and brings the link up, with res's addresses and routes when IPAM ran
// (L2 mode otherwise, as in the reference: no sysctls, no addresses).
func configure(ifName string, c *NetConf, res *current.Result) error {
	l, err := link.ByName(ifName)
	if err != nil {
		return err
	}
	res.Interfaces[0].Mac = l.Attrs().HardwareAddr.String()
	if len(res.IPs) == 0 {
		return setUp(l)
	}
	hasV6 := slices.ContainsFunc(res.IPs, func(ipc *current.IPConfig) bool { return ipc.Address.IP.To4() == nil })
	if mtu := l.Attrs().MTU; hasV6 && mtu < minIPv6MTU {
		return netconf.Invalid("the macvlan's MTU %d is below %d, the least IPv6 works with, and IPAM returned an IPv6 address; raise \"mtu\" (or the master's) or give this network IPv4 ranges only", mtu, minIPv6MTU)
	}
	containerSysctls(ifName, hasV6, c.EnableDad)
	gwOf, err := link.AddAddrs(l, res.IPs, c.EnableDad)
	if err != nil {
		return err
	}
	// Up after the addresses: with arp_notify the kernel then announces
	// them (gratuitous ARP), and with ndisc_notify the IPv6 ones (unsolicited NA).
	if err := setUp(l); err != nil {
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

// setUp brings l up. The kernel checks the MAC only now: two macvlans of one
// master may exist with the same MAC, but only one may be up.
func setUp(l netlink.Link) error {
	err := netlink.LinkSetUp(l)
	if errors.Is(err, syscall.EADDRINUSE) {
		return netconf.Invalid("MAC %s is already used by another macvlan on the same master; request another MAC or none: %w", l.Attrs().HardwareAddr, err)
	}
	if err != nil {
		return fmt.Errorf("setting %q up: %w", l.Attrs().Name, err)
	}
	return nil
}

// containerSysctls sets what the reference sets, and turns IPv6 duplicate
// address detection off unless enabledad asks for it: IPAM hands out each
// address once, and DAD would hold the address back for a second or two.
// Failures are ignored as in the reference: the IPv6 keys are missing when
// the kernel has IPv6 disabled, and adding an IPv6 address then says so.
func containerSysctls(ifName string, hasV6, dad bool) {
	set := func(k, v string) { _ = link.Sysctl(k, v) }
	set("net/ipv4/conf/"+ifName+"/arp_notify", "1")
	set("net/ipv6/conf/"+ifName+"/ndisc_notify", "1")
	if !hasV6 {
		return
	}
	set("net/ipv6/conf/lo/disable_ipv6", "0")
	set("net/ipv6/conf/"+ifName+"/disable_ipv6", "0")
	set("net/ipv6/conf/"+ifName+"/keep_addr_on_down", "1")
	if dad {
		set("net/ipv6/conf/"+ifName+"/enhanced_dad", "1")
		set("net/ipv6/conf/"+ifName+"/accept_dad", "1")
	} else {
		set("net/ipv6/conf/"+ifName+"/accept_dad", "0")
	}
}
