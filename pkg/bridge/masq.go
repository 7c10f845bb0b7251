package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
)

// Names of ipMasqBackend, as the reference's.
const (
	masqIPTables = "iptables"
	masqNFTables = "nftables"
)

// masquerader is one backend of ipMasq: the rules that masquerade what an
// attachment's addresses send outside their subnets.
type masquerader interface {
	Setup(ctx context.Context, a masq.Attachment, addrs []netip.Prefix) error
	// Teardown removes the attachment's rules; none is success.
	Teardown(ctx context.Context, a masq.Attachment) error
	// GC removes the rules of network's attachments not in valid.
	GC(ctx context.Context, network string, valid []netconf.Attachment) error
}

// masqBackend is a backend by its ipMasqBackend name.
type masqBackend struct {
	name string
	m    masquerader
}

// masqBackends are every backend, in the order DEL and GC visit them.
var masqBackends = []masqBackend{
	{masqIPTables, masq.IPTables{}},
	{masqNFTables, masq.NFTables{}},
}

// chooseMasq sets the backend ADD uses: ipMasqBackend, or, as in the
// reference, iptables unless iptables-restore is not in PATH. Without
// ipMasq the key means nothing, and the reference accepts any value then.
func (c *NetConf) chooseMasq() error {
	var name string
	switch {
	case !c.IPMasq:
		return nil
	case c.IPMasqBackend != nil:
		name = *c.IPMasqBackend
	case iptables.HaveIPTables():
		name = masqIPTables
	default:
		name = masqNFTables
	}
	for _, b := range masqBackends {
		if b.name == name {
			c.masq = b
			return nil
		}
	}
	return netconf.Errorf(netconf.CodeUnsupportedField, "\"ipMasqBackend\" %q is not supported; use \"iptables\" or \"nftables\", or leave it out (then iptables, or nftables when iptables-restore is not in PATH)", name)
}

// setupMasq masquerades the attachment's addresses with the configured
// backend and registers the undo.
func setupMasq(ctx context.Context, s *attach) error {
	var addrs []netip.Prefix
	for _, ipc := range s.res.IPs {
		pfx, err := link.Prefix(&ipc.Address)
		if err != nil {
			return err
		}
		addrs = append(addrs, pfx)
	}
	att := attachment(s.c, s.Args.ContainerID, s.Args.IfName)
	m := s.c.masq.m
	if err := m.Setup(ctx, att, addrs); err != nil {
		return fmt.Errorf("ipMasq (%s): %w", s.c.masq.name, err)
	}
	s.Undo.Push("remove masquerade rules", func() error { return m.Teardown(context.WithoutCancel(ctx), att) })
	return nil
}

func attachment(c *NetConf, containerID, ifName string) masq.Attachment {
	return masq.Attachment{Network: c.Name, ContainerID: containerID, IfName: ifName}
}

// masqTeardowns are DEL's steps for ipMasq, one per backend: the
// attachment may come from a configuration with the other backend. A
// backend whose tools are missing has nothing to remove.
func masqTeardowns(ctx context.Context, a masq.Attachment) []func() error {
	var steps []func() error
	for _, b := range masqBackends {
		steps = append(steps, func() error {
			if err := b.m.Teardown(ctx, a); err != nil {
				return fmt.Errorf("ipMasq (%s): %w", b.name, err)
			}
			return nil
		})
	}
	return steps
}

// gcMasq runs GC in every backend.
func gcMasq(ctx context.Context, network string, valid []netconf.Attachment) error {
	var errs []error
	for _, b := range masqBackends {
		if err := b.m.GC(ctx, network, valid); err != nil {
			errs = append(errs, fmt.Errorf("ipMasq (%s): %w", b.name, err))
		}
	}
	return errors.Join(errs...)
}
