package subnetd

import (
	"context"
	"errors"
	"log/slog"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// hostRulesFor picks where the host rules go: nftables when the network
// config sets EnableNFTables (flanneld's key) or when iptables is not
// installed (nftables-only hosts), iptables otherwise. The other mode's
// rules are removed, so a node switched between modes keeps one set.
func hostRulesFor(netCfgNFT bool, log *slog.Logger) hostRules {
	ipt, nf := hostRules(hostrules.IPTables{}), hostRules(hostrules.NFTables{})
	if !netCfgNFT && iptables.HaveIPTables() {
		return &exclusiveRules{hostRules: ipt, other: nf}
	}
	why := "EnableNFTables"
	if !netCfgNFT {
		why = "iptables-restore is not installed"
	}
	log.Info("host rules in nftables", "because", why, "tables", "ip "+hostrules.NFTTable(family.IPv4).Name+", ip6 "+hostrules.NFTTable(family.IPv6).Name)
	return &exclusiveRules{hostRules: nf, other: ipt}
}

// exclusiveRules applies the host rules with one backend and removes the
// other's once, after the first successful Ensure: then a mode switch never
// leaves the node without rules, nor with both sets for longer than one
// check. Callers serialise (resyncedRules holds its lock).
type exclusiveRules struct {
	hostRules
	other     hostRules
	otherGone bool
}

func (e *exclusiveRules) Ensure(ctx context.Context, r hostrules.Rules) ([]string, error) {
	fixed, err := e.hostRules.Ensure(ctx, r)
	if err != nil || e.otherGone {
		return fixed, err
	}
	removed, err := e.other.Ensure(ctx, hostrules.Rules{})
	e.otherGone = err == nil
	return append(fixed, removed...), err
}

// Teardown removes the rules of both modes.
func (e *exclusiveRules) Teardown(ctx context.Context) error {
	return errors.Join(e.hostRules.Teardown(ctx), e.other.Teardown(ctx))
}
