package bridge

import (
	"context"
	"net/netip"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
)

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
	undo, err := s.c.masq.Setup(ctx, attachment(s.c, s.Args.ContainerID, s.Args.IfName), addrs)
	if err != nil {
		return err
	}
	s.Undo.Push("remove masquerade rules", undo)
	return nil
}

func attachment(c *NetConf, containerID, ifName string) masq.Attachment {
	return masq.Attachment{Network: c.Name, ContainerID: containerID, IfName: ifName}
}
