package hostrules

import (
	"net/netip"
	"slices"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestForwardDrops: a drop policy at the forward hook is reported unless
// the chain accepts the pod network both ways, in either form nft writes a
// prefix; iptables' FORWARD is left out on request; flannel's own chain,
// whose policy is accept, never counts.
func TestForwardDrops(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "nftfwd")
	network := netip.MustParsePrefix("10.244.0.0/16")
	drops := func(skipIPTables bool) []string {
		var out []string
		ns.Do(t, func() (err error) { out, err = ForwardDrops(network, skipIPTables); return err })
		return out
	}
	ns.Run(t, "nft", "add table inet fw")
	ns.Run(t, "nft", "add chain inet fw forward { type filter hook forward priority 0 ; policy drop ; }")
	ns.Run(t, "nft", "add table ip6 other")
	ns.Run(t, "nft", "add chain ip6 other forward { type filter hook forward priority 0 ; policy drop ; }")
	if got := drops(false); !slices.Equal(got, []string{"inet fw forward"}) {
		t.Fatalf("a dropping inet chain (and an IPv6 one, which IPv4 pods never meet): %q", got)
	}
	ns.Run(t, "nft", "add rule inet fw forward ip saddr 10.244.0.0/16 accept")
	ns.Run(t, "nft", "add rule inet fw forward ip daddr 10.244.1.0/24 accept")
	if got := drops(false); len(got) != 1 {
		t.Fatalf("accepting the network as source and only a part of it as destination: %q", got)
	}
	ns.Run(t, "nft", "add rule inet fw forward ip daddr 10.244.0.0/15 counter accept")
	ns.Do(t, func() error { return NFTables{}.Apply(t.Context(), nftDualStack) })
	if got := drops(false); len(got) != 0 {
		t.Fatalf("accepted both ways (a /16 loaded as 2 bytes, a /15 masked): %q", got)
	}
	ns.Run(t, "iptables", "-P", "FORWARD", "DROP")
	if got := drops(false); !slices.Equal(got, []string{"ip filter FORWARD"}) {
		t.Errorf("iptables' FORWARD DROP: %q", got)
	}
	if got := drops(true); len(got) != 0 {
		t.Errorf("iptables' FORWARD DROP, left to iptables-save: %q", got)
	}
}
