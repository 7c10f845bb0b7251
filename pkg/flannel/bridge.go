package flannel

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/bridge"
	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// bridgeKeys are the bridge delegate's keys that decide whether and where
// it puts the gateway address.
type bridgeKeys struct {
	Bridge           string `json:"bridge"`
	IsGateway        bool   `json:"isGateway"`
	IsDefaultGateway bool   `json:"isDefaultGateway"`
	ForceAddress     bool   `json:"forceAddress"`
	Vlan             int    `json:"vlan"`
}

// readdressBridge handles a node whose pod subnet changed (the lease was
// lost and re-acquired, the node re-joined) while its bridge kept the
// gateway of the old subnet, where the bridge delegate would refuse every
// pod ("cni0" already has an IP address different from ...), as operators
// see after a re-lease. With no pod attached
// the old addresses go and the bridge delegate adds the new gateway; with
// pods attached the ADD fails naming both subnets, since those pods keep
// old addresses that no longer route. Delegates other than bridge, and a
// bridge told to replace addresses itself (forceAddress), are left alone.
func readdressBridge(d delegateConf, e envfile.Env, log *slog.Logger) error {
	k := bridgeKeys{Bridge: bridge.DefaultName}
	if d.typ() != "bridge" || json.Unmarshal(d.bytes(), &k) != nil {
		return nil // the delegate reports its own configuration errors
	}
	if !(k.IsGateway || k.IsDefaultGateway) || k.ForceAddress || k.Vlan != 0 {
		return nil
	}
	br, err := link.BridgeByName(k.Bridge)
	if err != nil {
		return nil // not there yet, or not a bridge: the delegate creates it or says so
	}
	stale, want, err := staleGateways(br, e)
	if err != nil || len(stale) == 0 {
		return err
	}
	ports, err := bridgePorts(br)
	if err != nil {
		return err
	}
	conflict := &link.AddrConflictError{Link: k.Bridge, Have: stale[0], Want: want[family.OfPrefix(stale[0])]}
	if len(ports) > 0 {
		return netconf.Invalid("%v: the node's pod subnet changed from %v to %v (the node's lease was lost and re-acquired, "+
			"or the node re-joined), and %d pod(s) are still attached to %q (host-side interfaces: %s). "+
			"Those pods keep addresses of %v, which no longer route: drain the node (kubectl drain NODE --ignore-daemonsets) "+
			"or delete those pods; once no pod is attached, the next one re-addresses %q (or delete it: ip link delete %s)",
			conflict, conflict.Have.Masked(), conflict.Want.Masked(), len(ports), k.Bridge, strings.Join(ports, ", "),
			conflict.Have.Masked(), k.Bridge, k.Bridge)
	}
	for _, p := range stale {
		// A concurrent ADD may have removed it first.
		if err := netlink.AddrDel(br, &netlink.Addr{IPNet: link.IPNet(p)}); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return fmt.Errorf("removing the old gateway %v from %q: %w", p, k.Bridge, err)
		}
		log.Warn("the node's pod subnet changed; no pod was attached, so the bridge's old gateway was removed",
			"bridge", k.Bridge, "old", p, "new", want[family.OfPrefix(p)])
	}
	return nil
}

// staleGateways lists the bridge's addresses, in the families subnet.env
// gives a subnet for, that are not the gateway host-local gives that
// subnet (its first address); link-local addresses are the kernel's.
func staleGateways(br netlink.Link, e envfile.Env) (stale []netip.Prefix, want [2]netip.Prefix, err error) {
	for _, sn := range []netip.Prefix{e.Subnet, e.IPv6Subnet} {
		if sn.IsValid() {
			want[family.OfPrefix(sn)] = netip.PrefixFrom(sn.Masked().Addr().Next(), sn.Bits())
		}
	}
	addrs, err := link.Addrs(br, netlink.FAMILY_ALL)
	if err != nil {
		return nil, want, fmt.Errorf("listing the addresses of %q: %w", br.Attrs().Name, err)
	}
	for _, a := range addrs {
		p, err := link.Prefix(a.IPNet)
		if err != nil || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if w := want[family.OfPrefix(p)]; w.IsValid() && p != w {
			stale = append(stale, p)
		}
	}
	return stale, want, nil
}

// bridgePorts names the links enslaved to br: the host ends of its pods.
func bridgePorts(br netlink.Link) ([]string, error) {
	links, err := link.RetryDump(netlink.LinkList) // a pod's ADD or DEL may interrupt the dump
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports, nil
}
