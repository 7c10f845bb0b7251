package macvlan

import (
	"context"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/netconf"
)

// Del removes the macvlan from the container and releases the IPAM
// reservation (containerif.Del: at the same time for host-local, the
// release first for an IPAM plugin that works through the interface). What
// is already gone counts as removed, and the master is never looked at:
// DEL works after the container's namespace was deleted (which took the
// macvlan with it) and after the master disappeared or the default route
// moved.
func (p *Plugin) Del(ctx context.Context, a *cniplugin.Args) error {
	return containerif.Del(ctx, a, loadConf, nil)
}

// GC forwards to IPAM, which releases the reservations of attachments not
// in the valid list. The plugin has nothing else on the node to collect:
// a macvlan dies with its container's namespace.
func (p *Plugin) GC(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	_, err = a.IPAM(ctx, "GC", c.IPAM.Type)
	return err
}

// Status reports whether an ADD could succeed: the master must exist (a
// master inside containers cannot be checked without one) and IPAM must be
// ready. A missing master is code 50, "not available".
func (p *Plugin) Status(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	if !c.LinkContNs {
		if _, err := c.findMaster(); err != nil {
			return netconf.Errorf(netconf.CodeUnavailable, "macvlan cannot attach pods: %w", err)
		}
	}
	_, err = a.IPAM(ctx, "STATUS", c.IPAM.Type)
	return err
}
