// Package portmap is the portmap plugin: host ports forwarded to a
// container, chained after the plugin that gives the container its
// addresses, over iptables or nftables (pkg/netfilter/hostport); a drop-in
// replacement for the reference CNI portmap plugin. The portmap binary runs
// it. It must not import another plugin's package, pkg/overlay or
// pkg/subnet.
package portmap

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/hostport"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// mapper is what a backend does with an attachment's port mappings.
type mapper interface {
	Add(ctx context.Context, c *hostport.Conf, addrs []netip.Prefix) error
	Check(ctx context.Context, c *hostport.Conf, addrs []netip.Prefix) error
	// Del needs only c's attachment; c's mappings and addrs, when known,
	// can make it cheaper.
	Del(ctx context.Context, c *hostport.Conf, addrs []netip.Prefix) error
	GC(ctx context.Context, network string, valid hostport.Valid) error
}

// Plugin is the portmap plugin's verbs. Its zero value uses the real
// iptables and nftables.
type Plugin struct {
	ipt hostport.IPTables
	nft hostport.NFTables
}

func (p *Plugin) mapper(c *conf) mapper {
	if c.backend == backendNFTables {
		return p.nft
	}
	return p.ipt
}

func attachment(c *conf, a *cniplugin.Args) hostport.Attachment {
	return hostport.Attachment{Network: c.Name, ContainerID: a.ContainerID, IfName: a.IfName}
}

// Add forwards the host ports to the container's addresses from the
// prevResult and passes the prevResult through. Without mappings it
// changes nothing, as the reference.
func (p *Plugin) Add(ctx context.Context, a *cniplugin.Args) (_ types.Result, retErr error) {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return nil, err
	}
	prev, err := c.ChainedPrevResult("the plugin that gives the container its addresses (e.g. bridge)")
	if err != nil {
		return nil, err
	}
	addrs := containerAddrs(prev, a.IfName)
	if len(c.hp.Maps) == 0 || len(addrs) == 0 {
		return prev, nil
	}
	c.hp.Attachment = attachment(c, a)
	m := p.mapper(c)
	undo := &cniplugin.Undo{}
	defer undo.OnError(&retErr, a.Logger())
	// Registered first: an ADD that failed in one family is taken back in both.
	undo.Push("remove port mappings", func() error {
		return m.Del(context.WithoutCancel(ctx), &hostport.Conf{Attachment: c.hp.Attachment}, nil)
	})
	if err := m.Add(ctx, &c.hp, addrs); err != nil {
		return nil, fmt.Errorf("installing port mappings (%s): %w", c.backend, err)
	}
	if err := localnetRouting(&c.hp, addrs); err != nil {
		return nil, err
	}
	// Conntrack entries made before the rules existed would keep sending
	// a UDP flow to wherever it went; failing to flush them is only logged.
	if err := flushUDPConntrack(&c.hp, addrs); err != nil {
		a.Logger().Warn("stale UDP conntrack entries for the host ports not deleted", "err", err)
	}
	a.Logger().Info("port mappings installed", "backend", c.backend, "mappings", len(c.hp.Maps))
	return prev, nil
}

// Del removes the attachment's rules, found by their tags: it needs no
// runtimeConfig and no prevResult, and finding nothing is success.
func (p *Plugin) Del(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	c.hp.Attachment = attachment(c, a)
	var addrs []netip.Prefix
	if prev, err := c.PrevResult(); err == nil && prev != nil {
		addrs = containerAddrs(prev, a.IfName) // a hint only: DEL works without
	}
	if err := p.mapper(c).Del(ctx, &c.hp, addrs); err != nil {
		return fmt.Errorf("removing port mappings (%s): %w", c.backend, err)
	}
	return nil
}

// Check verifies every rule of the attachment and the shared chains they
// rely on, and route_localnet where localhost traffic needs it.
func (p *Plugin) Check(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	prev, err := c.CheckPrevResult()
	if err != nil {
		return err
	}
	addrs := containerAddrs(prev, a.IfName)
	if len(c.hp.Maps) == 0 || len(addrs) == 0 {
		return nil
	}
	c.hp.Attachment = attachment(c, a)
	if err := p.mapper(c).Check(ctx, &c.hp, addrs); err != nil {
		return err
	}
	return checkLocalnetRouting(&c.hp, addrs)
}

// GC removes the rules of every attachment of this network that is not
// in the valid list.
func (p *Plugin) GC(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	valid := map[[2]string]bool{}
	ids := map[string]bool{}
	for _, v := range c.ValidList() {
		valid[[2]string{v.ContainerID, v.IfName}] = true
		ids[v.ContainerID] = true
	}
	isValid := func(id, ifName string) bool {
		if ifName == "" {
			return ids[id] // a reference rule names no interface
		}
		return valid[[2]string{id, ifName}]
	}
	if err := p.mapper(c).GC(ctx, c.Name, isValid); err != nil {
		return fmt.Errorf("collecting port mappings (%s): %w", c.backend, err)
	}
	return nil
}

// Status reports whether the backend's tools are there.
func (p *Plugin) Status(_ context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	if c.backend == backendIPTables && !iptables.HaveIPTables() {
		return netconf.Errorf(netconf.CodeUnavailable, "iptables-restore is not in PATH; install iptables (Debian: apt-get install iptables) or set \"backend\": \"nftables\"")
	}
	return nil
}
