package containerif

import (
	"context"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
)

// Conf is a plugin's configuration: a struct embedding netconf.Base.
type Conf interface{ Common() *netconf.Base }

// Load is a plugin's loadConf: its configuration from stdin and CNI_ARGS,
// every key checked before anything is done.
type Load[C Conf] func(stdin []byte, cniArgs string) (C, error)

// Add is an interface plugin's ADD around its own part: the configuration
// loaded, the container's namespace opened (code 3 when it is gone), part
// run, and everything part registered on the undo stack taken back when it
// fails, so that a failed ADD leaves nothing behind.
func Add[C Conf](ctx context.Context, a *cniplugin.Args, load Load[C], part func(context.Context, *Attach, C) (*current.Result, error)) (_ types.Result, retErr error) {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	t, err := begin(a)
	if err != nil {
		return nil, err
	}
	defer t.end(&retErr)
	res, err := part(ctx, t, c)
	if err != nil {
		return nil, err // not res: a nil *current.Result is no nil types.Result
	}
	return res, nil
}

// Check is an interface plugin's CHECK around its own part: the
// configuration loaded, the prevResult (which CHECK needs), IPAM's CHECK,
// and this invocation's interface found in the prevResult.
func Check[C Conf](ctx context.Context, a *cniplugin.Args, load Load[C], part func(*Checking, C) error) error {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	b := c.Common()
	prev, err := b.CheckPrevResult()
	if err != nil {
		return err
	}
	if _, err := a.IPAM(ctx, "CHECK", b.IPAM.Type); err != nil {
		return err
	}
	idx, err := a.IfaceIndex(prev)
	if err != nil {
		return err
	}
	return part(&Checking{Args: a, Prev: prev, Idx: idx}, c)
}

// Del is an interface plugin's DEL: the configuration loaded, then the IPAM
// release, the link's removal and the plugin's own steps, which part (nil
// for none) gives (Teardown), all at the same time: deleting a link waits
// 10-20 ms for the kernel's RCU grace period, and the IPAM plugin and
// iptables do their work meanwhile. Each runs even when another failed, and
// what is already gone counts as removed, so DEL can be repeated and works
// after the container's namespace was deleted (which took its links).
//
// An IPAM plugin that works through the interface (any but host-local and
// static, such as dhcp) is the exception: it is released first, and the link removed only
// once the release succeeded, as every reference plugin but the bridge does
// (the bridge's link-first order left dhcp unable to release its leases,
// containernetworking/plugins#791); a failed release keeps the interface
// for the runtime's retry of DEL.
func Del[C Conf](ctx context.Context, a *cniplugin.Args, load Load[C], part func(context.Context, *cniplugin.Args, C) Teardown) error {
	c, err := load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	var td Teardown
	if part != nil {
		td = part(ctx, a, c)
	}
	return td.run(ctx, a, c.Common().IPAM.Type)
}
