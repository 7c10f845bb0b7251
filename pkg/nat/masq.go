package nat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Setup masquerades traffic from each address of the attachment to anything
// outside the address's subnet and outside multicast. Declaring the chain
// flushes it, and jumps left by an earlier ADD of the same attachment are
// deleted in the same transaction, so a repeated ADD converges instead of
// piling up rules. Only this attachment writes its chain, so reading the
// table first races with no one.
func (m Masq) Setup(ctx context.Context, network, containerID string, addrs []netip.Prefix) error {
	for _, f := range families {
		var mine []netip.Prefix
		for _, p := range addrs {
			if p.Addr().Is6() == f.v6 {
				mine = append(mine, p)
			}
		}
		if len(mine) == 0 {
			continue
		}
		t, err := m.read(ctx, f)
		if err != nil {
			return err
		}
		if err := m.commit(ctx, f, setupLines(f, t, network, containerID, mine)); err != nil {
			return err
		}
	}
	return nil
}

func setupLines(f family, t *natTable, network, containerID string, addrs []netip.Prefix) []string {
	chain, c := ChainName(network, containerID), quote(Comment(network, containerID))
	lines := append([]string{":" + chain + " - [0:0]"}, t.deleteJumps(chain)...)
	for _, p := range addrs {
		lines = append(lines, fmt.Sprintf("-A %s -d %s -m comment --comment %s -j ACCEPT", chain, p.Masked(), c))
	}
	lines = append(lines, fmt.Sprintf("-A %s ! -d %s -m comment --comment %s -j MASQUERADE", chain, f.multicast, c))
	for _, p := range addrs {
		host := netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
		lines = append(lines, fmt.Sprintf("-A POSTROUTING -s %s -m comment --comment %s -j %s", host, c, chain))
	}
	return lines
}

// Teardown removes the attachment's chain and every jump to it, in both
// families. It needs only the network and container ID, so it works after
// the container's namespace (and its addresses) are gone. With the real
// binaries a family is first tried over netlink (nftMasqTeardown), which
// spares the DEL two to four iptables processes.
func (m Masq) Teardown(ctx context.Context, network, containerID string) error {
	chain := ChainName(network, containerID)
	var errs []error
	for _, f := range families {
		if m.Run == nil && nftMasqTeardown(f.v6, chain, Comment(network, containerID)) {
			continue
		}
		t, err := m.read(ctx, f)
		if errors.Is(err, ErrNotInstalled) {
			continue // then no rule can exist
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if lines := t.removeChain(chain); len(lines) > 0 {
			errs = append(errs, m.commit(ctx, f, lines))
		}
	}
	return errors.Join(errs...)
}

// GC removes the chains of network whose container is not in valid. A chain
// counts as ours only when its name is the one its comment's network and
// container ID hash to, which keeps portmap's and others' CNI- chains safe.
func (m Masq) GC(ctx context.Context, network string, valid map[string]bool) error {
	var errs []error
	for _, f := range families {
		t, err := m.read(ctx, f)
		if errors.Is(err, ErrNotInstalled) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var lines []string
		for _, chain := range t.staleChains(network, valid) {
			lines = append(lines, t.removeChain(chain)...)
		}
		if len(lines) > 0 {
			errs = append(errs, m.commit(ctx, f, lines))
		}
	}
	return errors.Join(errs...)
}
