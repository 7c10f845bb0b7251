package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netns"
)

// Del removes the attachment: the veth pair (through its container side,
// the one whose name is known), the IPAM reservation and the rules. Each
// step runs even when an earlier one failed, and whatever is already gone
// counts as removed, so DEL can be repeated and works after the container's
// namespace was deleted (which took the veth pair with it).
func (p *plugin) Del(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	var errs []error
	if a.Netns != "" {
		err := netns.Do(a.Netns, func() error { return link.DeleteIfExists(a.IfName) })
		if err != nil && !errors.Is(err, netns.ErrGone) {
			errs = append(errs, fmt.Errorf("deleting %q in %s: %w", a.IfName, a.Netns, err))
		}
	}
	if c.IPAM.Type != "" {
		if _, err := a.Delegate(ctx, "DEL", c.IPAM.Type, a.StdinData); err != nil {
			errs = append(errs, fmt.Errorf("IPAM plugin %q: %w", c.IPAM.Type, err))
		}
	}
	if c.MacSpoofChk {
		errs = append(errs, spoofCheck(a, "", "").Teardown(ctx))
	}
	if c.IPMasq {
		if err := p.masq.Teardown(ctx, c.Name, a.ContainerID); err != nil {
			errs = append(errs, fmt.Errorf("ipMasq: %w", err))
		}
	}
	return errors.Join(errs...)
}

// GC forwards to IPAM and removes the masquerade chains of this network
// whose container is not in the valid-attachment list. It sweeps chains
// even when ipMasq is now off, since an earlier configuration may have
// created them.
func (p *plugin) GC(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	var errs []error
	if c.IPAM.Type != "" {
		if _, err := a.Delegate(ctx, "GC", c.IPAM.Type, a.StdinData); err != nil {
			errs = append(errs, fmt.Errorf("IPAM plugin %q: %w", c.IPAM.Type, err))
		}
	}
	valid := map[string]bool{}
	for _, att := range c.ValidList() {
		valid[att.ContainerID] = true
	}
	if err := p.masq.GC(ctx, c.Name, valid); err != nil {
		errs = append(errs, fmt.Errorf("ipMasq: %w", err))
	}
	return errors.Join(errs...)
}

// Status reports ready when the configuration is valid and IPAM is ready.
func (p *plugin) Status(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	if c.IPAM.Type == "" {
		return nil
	}
	if _, err := a.Delegate(ctx, "STATUS", c.IPAM.Type, a.StdinData); err != nil {
		return fmt.Errorf("IPAM plugin %q: %w", c.IPAM.Type, err)
	}
	return nil
}
