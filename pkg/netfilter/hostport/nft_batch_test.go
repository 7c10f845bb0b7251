package hostport

import (
	"context"
	"net/netip"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestManyMappings: one attachment with 1200 mappings in both
// families is one transaction larger than a netlink socket's default send
// buffer (212992 bytes); ADD, CHECK and DEL must still go through.
func TestManyMappings(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "nftmany")
	c := manyMaps(1200)
	addrs := []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24"), netip.MustParsePrefix("fd01::5/64")}
	ns.Do(t, func() error {
		ctx := context.Background()
		if err := (NFTables{}).Add(ctx, c, addrs); err != nil {
			return err
		}
		if err := (NFTables{}).Check(ctx, c, addrs); err != nil {
			return err
		}
		return (NFTables{}).Del(ctx, c, addrs)
	})
	if out := ns.Run(t, "nft", "list", "tables"); out != "" {
		t.Fatalf("tables left after DEL:\n%s", out)
	}
}
