// Package firewall is the firewall plugin: chained after the plugin that
// gives a container its addresses, it lets the container's forwarded
// traffic through the node's firewall: with iptables (the reference's
// chains) or the suite's nftables table (pkg/netfilter/podfilter), or by
// putting the addresses into a firewalld zone over D-Bus (firewalld.go);
// with the ingressPolicy same-bridge or isolated it also isolates the
// pod's bridge. A drop-in replacement for the reference CNI firewall
// plugin; the firewall binary runs it. It must not import another
// plugin's package, pkg/overlay or pkg/subnet.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
	"github.com/cnisuite/cni/pkg/netfilter/podfilter"
)

// Plugin is the firewall plugin's verbs. Its zero value uses the real
// iptables, nftables and system bus.
type Plugin struct {
	ipt podfilter.IPTables
	nft podfilter.NFTables
	bus string // the D-Bus address of firewalld's bus; "" the system bus
}

// backend resolves the configured backend: without one, firewalld when it
// runs, iptables otherwise, as the reference chooses. An unusable backend
// is code 50 with what to do.
func (p *Plugin) backend(ctx context.Context, c *conf) (string, error) {
	b := c.Backend
	if b == "" {
		b = backendIPTables
		if firewalldRunning(ctx, p.bus) {
			b = backendFirewalld
		}
	}
	if b == backendIPTables {
		return b, p.needIPTables("the iptables backend")
	}
	return b, nil
}

// needIPTables is code 50 when the iptables binaries are missing.
func (p *Plugin) needIPTables(what string) error {
	if p.ipt.Run != nil || iptables.HaveIPTables() {
		return nil
	}
	return netconf.Errorf(netconf.CodeUnavailable, "%s needs iptables, and iptables-restore is not in PATH; install iptables (Debian: apt-get install iptables) or set \"backend\": \"nftables\"", what)
}

// Add lets the addresses of the prevResult through the firewall and
// passes the prevResult on. Everything is checked before anything
// changes, and a failure takes back what the ADD did.
func (p *Plugin) Add(ctx context.Context, a *cniplugin.Args) (_ types.Result, retErr error) {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return nil, err
	}
	prev, err := c.ChainedPrevResult("the plugin that gives the container its addresses (e.g. bridge)")
	if err != nil {
		return nil, err
	}
	pc, err := c.podConf(a, prev)
	if err != nil {
		return nil, err
	}
	b, err := p.backend(ctx, c)
	if err != nil {
		return nil, err
	}
	switch b {
	case backendIPTables:
		err = p.ipt.Add(ctx, pc)
	case backendNFTables:
		err = p.nft.Add(ctx, pc)
	default:
		err = p.addFirewalld(ctx, a, c, pc)
	}
	if err != nil {
		return nil, fmt.Errorf("firewall (%s): %w", b, err)
	}
	a.Logger().Info("firewall rules installed", "backend", b, "addresses", len(pc.Addrs), "ingressPolicy", c.policy)
	return prev, nil
}

// addFirewalld puts the addresses into the zone and, for an ingress
// policy, isolates the bridge with iptables, as the reference does.
func (p *Plugin) addFirewalld(ctx context.Context, a *cniplugin.Args, c *conf, pc *podfilter.Conf) (retErr error) {
	if pc.Isolation != nil {
		if err := p.needIPTables("ingressPolicy " + c.policy + " with firewalld"); err != nil {
			return err
		}
	}
	fw, err := dialFirewalld(ctx, p.bus)
	if err != nil {
		return err
	}
	defer fw.close()
	undo := &cniplugin.Undo{}
	defer undo.OnError(&retErr, a.Logger())
	added, err := fw.add(ctx, c.zone, pc.Addrs)
	undo.Push("remove firewalld sources", func() error { return fw.remove(context.WithoutCancel(ctx), c.zone, added) })
	if err != nil || pc.Isolation == nil {
		return err
	}
	pc.Isolation.Only = true
	return p.ipt.Add(ctx, pc)
}

// Del removes the attachment's rules from iptables and from nftables,
// whichever backend made them (so a changed "backend" leaks nothing),
// found by their tag: it needs no prevResult, whose addresses also remove
// the reference's untagged rules and the firewalld sources. Nothing found
// is success.
func (p *Plugin) Del(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	var hint []netip.Addr
	if prev, err := c.PrevResult(); err == nil && prev != nil {
		hint = addrs(prev)
	}
	att := c.attachment(a)
	errs := []error{p.ipt.Del(ctx, att, hint), p.nft.Del(ctx, att)}
	if c.Backend == backendFirewalld || c.Backend == "" {
		errs = append(errs, p.delFirewalld(ctx, a, c, hint))
	}
	return errors.Join(errs...)
}

// delFirewalld takes the addresses out of the zone. A bus or firewalld
// that is not running has no sources to remove: they are its runtime
// configuration, gone with it.
func (p *Plugin) delFirewalld(ctx context.Context, a *cniplugin.Args, c *conf, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	fw, err := dialFirewalld(ctx, p.bus)
	if err != nil {
		a.Logger().Debug("firewalld not reached: no source to remove", "err", err)
		return nil
	}
	defer fw.close()
	return fw.remove(ctx, c.zone, addrs)
}

// Check verifies that the attachment's rules are in place for the
// prevResult's addresses, with the rules they rely on.
func (p *Plugin) Check(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	prev, err := c.CheckPrevResult()
	if err != nil {
		return err
	}
	pc, err := c.podConf(a, prev)
	if err != nil {
		return err
	}
	b, err := p.backend(ctx, c)
	if err != nil {
		return err
	}
	switch b {
	case backendIPTables:
		return p.ipt.Check(ctx, pc)
	case backendNFTables:
		return p.nft.Check(ctx, pc)
	}
	fw, err := dialFirewalld(ctx, p.bus)
	if err != nil {
		return err
	}
	defer fw.close()
	if err := fw.check(ctx, c.zone, pc.Addrs); err != nil || pc.Isolation == nil {
		return err
	}
	pc.Isolation.Only = true
	return p.ipt.Check(ctx, pc)
}

// GC removes, from iptables and nftables, the rules of every attachment
// of this network that is not in the valid list. firewalld's sources name
// no attachment: GC leaves them to DEL.
func (p *Plugin) GC(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	valid := map[netconf.Attachment]bool{}
	for _, v := range c.ValidList() {
		valid[v] = true
	}
	isValid := func(id, ifName string) bool { return valid[netconf.Attachment{ContainerID: id, IfName: ifName}] }
	return errors.Join(p.ipt.GC(ctx, c.Name, isValid), p.nft.GC(ctx, c.Name, isValid))
}

// Status reports whether the backend can be used: iptables installed,
// firewalld on the bus.
func (p *Plugin) Status(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	b, err := p.backend(ctx, c)
	if err != nil || b != backendFirewalld {
		return err
	}
	fw, err := dialFirewalld(ctx, p.bus)
	if err == nil {
		fw.close()
	}
	return err
}
