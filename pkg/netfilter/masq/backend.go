package masq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// Names of ipMasqBackend, as the reference's.
const (
	nameIPTables = "iptables"
	nameNFTables = "nftables"
)

// masquerader is one backend: the rules that masquerade what an
// attachment's addresses send outside their subnets.
type masquerader interface {
	Setup(ctx context.Context, a Attachment, addrs []netip.Prefix) error
	// Teardown removes the attachment's rules; none is success.
	Teardown(ctx context.Context, a Attachment) error
	// GC removes the rules of network's attachments not in valid.
	GC(ctx context.Context, network string, valid []netconf.Attachment) error
}

// Backend is the backend an ipMasq plugin's ADD uses (bridge, ptp), by
// its ipMasqBackend name; the zero Backend is none (ipMasq off).
type Backend struct {
	Name string
	m    masquerader
}

// backends are every backend, in the order DEL and GC visit them.
var backends = []Backend{
	{nameIPTables, IPTables{}},
	{nameNFTables, NFTables{}},
}

// Choose is the backend of a configuration's ipMasq and ipMasqBackend:
// the one named, or, as in the reference, iptables unless
// iptables-restore is not in PATH. Without ipMasq the key means nothing,
// and the reference accepts any value then: the zero Backend.
func Choose(ipMasq bool, name *string) (Backend, error) {
	var want string
	switch {
	case !ipMasq:
		return Backend{}, nil
	case name != nil:
		want = *name
	case iptables.HaveIPTables():
		want = nameIPTables
	default:
		want = nameNFTables
	}
	for _, b := range backends {
		if b.Name == want {
			return b, nil
		}
	}
	return Backend{}, netconf.Errorf(netconf.CodeUnsupportedField, "\"ipMasqBackend\" %q is not supported; use \"iptables\" or \"nftables\", or leave it out (then iptables, or nftables when iptables-restore is not in PATH)", want)
}

// Setup masquerades the attachment's addresses and returns the undo,
// which removes the rules again. A Setup that fails removes what it made
// before it failed (one family's rules when the other's failed).
func (b Backend) Setup(ctx context.Context, a Attachment, addrs []netip.Prefix) (undo func() error, err error) {
	undo = func() error { return b.m.Teardown(context.WithoutCancel(ctx), a) }
	if err := b.m.Setup(ctx, a, addrs); err != nil {
		return nil, errors.Join(fmt.Errorf("ipMasq (%s): %w", b.Name, err), undo())
	}
	return undo, nil
}

// Teardowns are DEL's steps for ipMasq, one per backend: the attachment
// may come from a configuration with the other backend. A backend whose
// tools are missing has nothing to remove.
func Teardowns(ctx context.Context, a Attachment) []func() error {
	var steps []func() error
	for _, b := range backends {
		steps = append(steps, func() error {
			if err := b.m.Teardown(ctx, a); err != nil {
				return fmt.Errorf("ipMasq (%s): %w", b.Name, err)
			}
			return nil
		})
	}
	return steps
}

// GCAll runs GC in every backend, since an earlier configuration may have
// used the other one, or ipMasq when it is now off.
func GCAll(ctx context.Context, network string, valid []netconf.Attachment) error {
	var errs []error
	for _, b := range backends {
		if err := b.m.GC(ctx, network, valid); err != nil {
			errs = append(errs, fmt.Errorf("ipMasq (%s): %w", b.Name, err))
		}
	}
	return errors.Join(errs...)
}
