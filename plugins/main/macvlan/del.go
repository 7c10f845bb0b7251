package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// Del removes the macvlan from the container and releases the IPAM
// reservation. Both run even when the other failed, what is already gone
// counts as removed, and the master is never looked at: DEL works after the
// container's namespace was deleted (which took the macvlan with it) and
// after the master disappeared or the default route moved.
//
// The IPAM plugin runs while the link is deleted: deleting a link waits for
// the kernel's RCU grace period, so DEL takes the longer of the two instead
// of their sum. The reference releases the address first, so nothing new
// can see the address free while the link still holds it.
func (p *plugin) Del(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	ipam := netns.Go(func() error { // in this thread's namespace, as the bridge's
		_, err := a.IPAM(ctx, "DEL", c.IPAM.Type)
		return err
	})
	var linkErr error
	if a.Netns != "" {
		err := netns.Do(a.Netns, func() error { return link.DeleteIfExists(a.IfName) })
		if err != nil && !errors.Is(err, netns.ErrGone) {
			linkErr = fmt.Errorf("deleting %q in %s: %w", a.IfName, a.Netns, err)
		}
	}
	return errors.Join(linkErr, <-ipam)
}

// GC forwards to IPAM, which releases the reservations of attachments not
// in the valid list. The plugin has nothing else on the node to collect:
// a macvlan dies with its container's namespace.
func (p *plugin) GC(ctx context.Context, a *cniplugin.Args) error {
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
func (p *plugin) Status(ctx context.Context, a *cniplugin.Args) error {
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
