package nft

import (
	"context"
	"slices"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestReset: a dry run lists the suite's tables, the reset deletes them
// whole, a second finds none; tables of others stay.
func TestReset(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "nft-reset")
	do(t, ns, func(ctx context.Context) error { return Masq{}.Setup(ctx, attA, dual) })
	do(t, ns, func(ctx context.Context) error { return FlannelHost{}.Apply(ctx, dualStack) })
	ns.Run(t, "nft", "add table inet keep")
	want := []string{"table ip flannel-ipv4", "table ip6 flannel-ipv6", "table inet cni_plugins_masquerade"}
	for _, dry := range []bool{true, false, false} {
		var found []string
		do(t, ns, func(context.Context) (err error) { found, err = Reset(dry); return err })
		if !slices.Equal(found, want) {
			t.Errorf("Reset(dryRun=%v) found %q, want %q", dry, found, want)
		}
		if !dry {
			want = nil
		}
	}
	if out := ns.Run(t, "nft", "list", "tables"); out != "table inet keep\n" {
		t.Errorf("tables after the reset: %q", out)
	}
}
