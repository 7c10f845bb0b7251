package containerif

import (
	"context"
	"errors"

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

// Parts are an interface plugin's own parts of its verbs. New runs them inside what every
// interface plugin does around them, so a plugin writes only what is its own.
type Parts[C Conf] struct {
	Load Load[C]
	// Add creates the plugin's links and applies the IPAM result (Attach.IPAM, Attach.Configure),
	// registering each step's undo right after it succeeds.
	Add func(context.Context, *Attach, C) (*current.Result, error)
	// Check verifies the plugin's links against the prevResult.
	Check func(*Checking, C) error
	// Del gives what the plugin removes besides the container's link and the IPAM reservation;
	// nil for nothing else.
	Del func(context.Context, *cniplugin.Args, C) Teardown
	// GC removes what the plugin leaves on the node for attachments not in the valid list,
	// besides IPAM's reservations; nil for nothing.
	GC func(context.Context, C) error
	// Status says why an ADD could not succeed, besides IPAM; nil when only IPAM can say.
	Status func(C) error
}

// New is the plugin of parts p.
func New[C Conf](p Parts[C]) cniplugin.Plugin { return plugin[C]{p} }

type plugin[C Conf] struct{ Parts[C] }

// Add is ADD around the plugin's part: the configuration loaded, the
// container's namespace opened (code 3 when it is gone), the part run, and
// everything it registered on the undo stack taken back when it fails, so
// that a failed ADD leaves nothing behind.
func (p plugin[C]) Add(ctx context.Context, a *cniplugin.Args) (_ types.Result, retErr error) {
	c, err := p.Load(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	t, err := begin(a)
	if err != nil {
		return nil, err
	}
	defer t.end(&retErr)
	res, err := p.Parts.Add(ctx, t, c)
	if err != nil {
		return nil, err // not res: a nil *current.Result is no nil types.Result
	}
	return res, nil
}

// Check is CHECK around the plugin's part: the configuration loaded, the
// prevResult (which CHECK needs), IPAM's CHECK, and this invocation's
// interface found in the prevResult.
func (p plugin[C]) Check(ctx context.Context, a *cniplugin.Args) error {
	c, err := p.Load(a.StdinData, a.Args)
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
	return p.Parts.Check(&Checking{Args: a, Prev: prev, Idx: idx}, c)
}

// Del is DEL: the configuration loaded, then the IPAM release, the link's
// removal and the plugin's own steps (Parts.Del), all at the same time:
// deleting a link waits 10-20 ms for the kernel's RCU grace period, and the
// IPAM plugin and iptables do their work meanwhile. Each runs even when
// another failed, and what is already gone counts as removed, so DEL can be
// repeated and works after the container's namespace was deleted (which
// took its links).
//
// An IPAM plugin that works through the interface (any but host-local and
// static, such as dhcp) is the exception: it is released first, and the
// link removed only once the release succeeded, as every reference plugin
// but the bridge does (the bridge's link-first order left dhcp unable to
// release its leases, containernetworking/plugins#791); a failed release
// keeps the interface for the runtime's retry of DEL.
func (p plugin[C]) Del(ctx context.Context, a *cniplugin.Args) error {
	c, err := p.Load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	var td Teardown
	if p.Parts.Del != nil {
		td = p.Parts.Del(ctx, a, c)
	}
	return td.run(ctx, a, c.Common().IPAM.Type)
}

// GC forwards to IPAM, which releases the reservations of attachments not in
// the valid list, and runs the plugin's own collection; both run even when
// the other fails.
func (p plugin[C]) GC(ctx context.Context, a *cniplugin.Args) error {
	c, err := p.Load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	_, err = a.IPAM(ctx, "GC", c.Common().IPAM.Type)
	if p.Parts.GC != nil {
		err = errors.Join(err, p.Parts.GC(ctx, c))
	}
	return err
}

// Status reports ready when the configuration is valid, the plugin's own
// condition holds and IPAM is ready.
func (p plugin[C]) Status(ctx context.Context, a *cniplugin.Args) error {
	c, err := p.Load(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	if p.Parts.Status != nil {
		if err := p.Parts.Status(c); err != nil {
			return err
		}
	}
	_, err = a.IPAM(ctx, "STATUS", c.Common().IPAM.Type)
	return err
}
