package bridge

import (
	"context"
	"errors"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/containerif"
)

// Del removes the attachment: the veth pair (through its container side,
// the one whose name is known), the IPAM reservation and the rules, at the
// same time and each even when another failed, except that an IPAM plugin
// working through the interface (dhcp) is released before the veth goes
// (containerif.Del). What is already gone counts as removed, so DEL can be
// repeated and works after the container's namespace was deleted (which
// took the veth pair with it).
func (p *Plugin) Del(ctx context.Context, a *cniplugin.Args) error {
	return containerif.Del(ctx, a, loadConf, rulesTeardown)
}

// rulesTeardown is what the bridge removes besides the link and the IPAM
// reservation.
func rulesTeardown(ctx context.Context, a *cniplugin.Args, c *NetConf) containerif.Teardown {
	var rules []func() error
	if c.MacSpoofChk {
		rules = append(rules, func() error { return spoofCheck(a, "", "").Teardown(ctx) })
	}
	if c.IPMasq {
		rules = append(rules, masqTeardowns(ctx, attachment(c, a.ContainerID, a.IfName))...)
	}
	return containerif.Teardown{Also: rules}
}

// GC forwards to IPAM and removes the masquerade rules of this network
// whose attachment is not in the valid-attachment list, in both backends.
// It sweeps even when ipMasq is now off, since an earlier configuration
// may have created them.
func (p *Plugin) GC(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	var errs []error
	if _, err := a.IPAM(ctx, "GC", c.IPAM.Type); err != nil {
		errs = append(errs, err)
	}
	if err := gcMasq(ctx, c.Name, c.ValidList()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Status reports ready when the configuration is valid and IPAM is ready.
func (p *Plugin) Status(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	_, err = a.IPAM(ctx, "STATUS", c.IPAM.Type)
	return err
}
