package masq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"sync"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// IPTables masquerades with iptables: each attachment owns one chain in
// the nat table, named and commented like the reference plugins', and
// every change of one ADD, DEL or GC is committed in a single
// iptables-restore --noflush transaction per address family. The chain
// is the network's and container ID's: the interface name is not part of
// it, as in the reference.
type IPTables struct {
	Run iptables.Runner // nil: the real binaries
}

func (m IPTables) read(ctx context.Context, f family.Family) (*iptables.Table, error) {
	ts, err := iptables.Save(ctx, m.Run, f, "nat")
	if err != nil {
		return nil, err
	}
	return ts.Get("nat"), nil
}

func (m IPTables) commit(ctx context.Context, f family.Family, lines []string) error {
	err := iptables.Restore(ctx, m.Run, f, map[string][]string{"nat": lines})
	if err != nil && !errors.Is(err, iptables.ErrXtablesLock) {
		return fmt.Errorf("applying masquerade rules: %w", err)
	}
	return err
}

// Setup masquerades traffic from each address of the attachment to anything
// outside the address's subnet and outside multicast. Declaring the chain
// flushes it, and jumps left by an earlier ADD of the same attachment are
// deleted in the same transaction, so a repeated ADD converges instead of
// piling up rules. Only this attachment writes its chain, so reading the
// table first races with no one.
func (m IPTables) Setup(ctx context.Context, a Attachment, addrs []netip.Prefix) error {
	for _, f := range family.All() {
		var mine []netip.Prefix
		for _, p := range addrs {
			if family.OfPrefix(p) == f {
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
		if err := m.commit(ctx, f, setupLines(f, t, a, mine)); err != nil {
			return err
		}
	}
	return nil
}

func setupLines(f family.Family, t *iptables.Table, a Attachment, addrs []netip.Prefix) []string {
	chain, c := ChainName(a.Network, a.ContainerID), iptables.Quote(comment(a.Network, a.ContainerID))
	lines := append([]string{":" + chain + " - [0:0]"}, t.DeleteJumps(chain)...)
	for _, p := range addrs {
		lines = append(lines, fmt.Sprintf("-A %s -d %s -m comment --comment %s -j ACCEPT", chain, p.Masked(), c))
	}
	lines = append(lines, fmt.Sprintf("-A %s ! -d %s -m comment --comment %s -j MASQUERADE", chain, f.Multicast(), c))
	for _, p := range addrs {
		host := netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
		lines = append(lines, fmt.Sprintf("-A POSTROUTING -s %s -m comment --comment %s -j %s", host, c, chain))
	}
	return lines
}

// Teardown removes the attachment's chain and every jump to it, in both
// families. It needs only the network and container ID, so it works after
// the container's namespace (and its addresses) are gone. With the real
// binaries a family is first tried over netlink (nftTeardown), which
// spares the DEL two to four iptables processes.
func (m IPTables) Teardown(ctx context.Context, a Attachment) error {
	chain := ChainName(a.Network, a.ContainerID)
	return m.eachFamily(ctx, func(f family.Family, t *iptables.Table) []string {
		return t.RemoveChain(chain)
	}, func(f family.Family) bool {
		return m.Run == nil && nftTeardown(f, chain, comment(a.Network, a.ContainerID))
	})
}

// GC removes the chains of network whose container is not in valid. A chain
// counts as ours only when its name is the one its comment's network and
// container ID hash to, which keeps portmap's and others' CNI- chains safe.
func (m IPTables) GC(ctx context.Context, network string, valid []netconf.Attachment) error {
	ids := map[string]bool{}
	for _, v := range valid {
		ids[v.ContainerID] = true
	}
	return m.eachFamily(ctx, func(_ family.Family, t *iptables.Table) []string {
		var lines []string
		for _, chain := range staleChains(t, network, ids) {
			lines = append(lines, t.RemoveChain(chain)...)
		}
		return lines
	}, nil)
}

// eachFamily reads each family that done (when not nil) does not take
// care of, and commits the lines plan makes of it, if any. A family
// without iptables has no rules to remove.
func (m IPTables) eachFamily(ctx context.Context, plan func(family.Family, *iptables.Table) []string, done func(family.Family) bool) error {
	var errs []error
	for _, f := range family.All() {
		if done != nil && done(f) {
			continue
		}
		t, err := m.read(ctx, f)
		if errors.Is(err, iptables.ErrNotInstalled) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if lines := plan(f, t); len(lines) > 0 {
			errs = append(errs, m.commit(ctx, f, lines))
		}
	}
	return errors.Join(errs...)
}

// commentRE reads comment's format back; compiled on first use (chainRE).
var commentRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^name: ("(?:[^"\\]|\\.)*") id: ("(?:[^"\\]|\\.)*")$`)
})

// parseComment reads back a comment.
func parseComment(c string) (network, containerID string, ok bool) {
	m := commentRE().FindStringSubmatch(c)
	if m == nil {
		return "", "", false
	}
	n, err1 := strconv.Unquote(m[1])
	id, err2 := strconv.Unquote(m[2])
	return n, id, err1 == nil && err2 == nil
}

// staleChains lists, sorted, the chains of network whose container is not valid.
func staleChains(t *iptables.Table, network string, valid map[string]bool) []string {
	stale := map[string]bool{}
	for _, r := range t.Rules {
		n, id, ok := parseComment(r.Comment)
		if !ok || n != network || valid[id] || r.Chain != ChainName(n, id) {
			continue
		}
		stale[r.Chain] = true
	}
	out := make([]string, 0, len(stale))
	for c := range stale {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}
