package bridge

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
// step runs even when another failed, and whatever is already gone counts as
// removed, so DEL can be repeated and works after the container's namespace
// was deleted (which took the veth pair with it). The steps run at the same
// time: the kernel takes 10-20 ms to delete a veth, mostly waiting for RCU,
// and the IPAM plugin and iptables get their work done meanwhile.
func (p *Plugin) Del(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	delLink := func() error {
		if a.Netns == "" {
			return nil
		}
		err := netns.Do(a.Netns, func() error { return link.DeleteIfExists(a.IfName) })
		if err != nil && !errors.Is(err, netns.ErrGone) {
			return fmt.Errorf("deleting %q in %s: %w", a.IfName, a.Netns, err)
		}
		return nil
	}
	delIPAM := func() error {
		_, err := a.IPAM(ctx, "DEL", c.IPAM.Type)
		return err
	}
	steps := []func() error{delLink, delIPAM}
	if !ipamIndependent(c.IPAM.Type) {
		// The interface goes first, then the IPAM plugin is told.
		steps = []func() error{func() error { return errors.Join(delLink(), delIPAM()) }}
	}
	if c.MacSpoofChk {
		steps = append(steps, func() error { return spoofCheck(a, "", "").Teardown(ctx) })
	}
	if c.IPMasq {
		steps = append(steps, masqTeardowns(ctx, attachment(c, a.ContainerID, a.IfName))...)
	}
	// Each step on a goroutine of its own, in this thread's namespace.
	return netns.Concurrently(steps...)
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
