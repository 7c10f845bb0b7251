package bridge

import (
	"context"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
)

// rulesTeardown is what the bridge's DEL removes besides the veth pair
// (through its container side, the one whose name is known) and the IPAM
// reservation: the MAC spoof check and the masquerade rules, at the same
// time as those and each even when another failed (containerif's DEL).
func rulesTeardown(ctx context.Context, a *cniplugin.Args, c *NetConf) containerif.Teardown {
	var rules []func() error
	if c.MacSpoofChk {
		rules = append(rules, func() error { return spoofCheck(a, "", "").Teardown(ctx) })
	}
	if c.IPMasq {
		rules = append(rules, masq.Teardowns(ctx, attachment(c, a.ContainerID, a.IfName))...)
	}
	return containerif.Teardown{Also: rules}
}

// gc removes the masquerade rules of this network whose attachment is not
// in the valid-attachment list, in both backends. It sweeps even when
// ipMasq is now off, since an earlier configuration may have created them.
func gc(ctx context.Context, c *NetConf) error {
	return masq.GCAll(ctx, c.Name, c.ValidList())
}
