package leftovers

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
	"github.com/cnisuite/cni/pkg/netfilter/podfilter"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestResetNFTables: a dry run lists the suite's tables, the reset deletes
// them whole, a second finds none; tables of others stay.
func TestResetNFTables(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "nft-reset")
	ctx := context.Background()
	dual := []netip.Prefix{netip.MustParsePrefix("10.244.1.2/24"), netip.MustParsePrefix("fd00:10::2/64")}
	ns.Do(t, func() error {
		return masq.NFTables{}.Setup(ctx, masq.Attachment{Network: "testnet", ContainerID: "c1", IfName: "eth0"}, dual)
	})
	ns.Do(t, func() error {
		return hostrules.NFTables{}.Apply(ctx, hostrules.Rules{Masq: true, Nets: []hostrules.Net{
			{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24")},
			{Network: netip.MustParsePrefix("fd00:10::/56"), Subnet: netip.MustParsePrefix("fd00:10::/64")},
		}})
	})
	ns.Do(t, func() error {
		return podfilter.NFTables{}.Add(ctx, &podfilter.Conf{Attachment: podfilter.Attachment{Network: "testnet", ContainerID: "c1", IfName: "eth0"},
			Addrs: []netip.Addr{dual[0].Addr()}})
	})
	ns.Run(t, "nft", "add table inet keep")
	want := []string{"table ip flannel-ipv4", "table ip6 flannel-ipv6", "table inet cni_plugins_masquerade", "table inet cnisuite_firewall"}
	for _, dry := range []bool{true, false, false} {
		var found []string
		ns.Do(t, func() (err error) { found, err = ResetNFTables(dry); return err })
		if !slices.Equal(found, want) {
			t.Errorf("ResetNFTables(dryRun=%v) found %q, want %q", dry, found, want)
		}
		if !dry {
			want = nil
		}
	}
	if out := ns.Run(t, "nft", "list", "tables"); out != "table inet keep\n" {
		t.Errorf("tables after the reset: %q", out)
	}
}
