package hostrules

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
	netnstest "github.com/cnisuite/cni/test/netns"
)

var nftDualStack = Rules{Masq: true, Forward: true, Nets: []Net{
	{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24")},
	{Network: netip.MustParsePrefix("fd00:10:244::/56"), Subnet: netip.MustParsePrefix("fd00:10:244:3::/64")},
}}

// nftRules is what `nft list table` prints of table's rules, one line each,
// without the handles.
func nftRules(t *testing.T, ns *netnstest.NS, family, table string) []string {
	t.Helper()
	out, err := ns.Try("nft", "list", "table", family, table)
	if err != nil {
		return nil
	}
	var rules []string
	for line := range strings.Lines(out) {
		l := strings.TrimSpace(line)
		if l == "" || l == "}" || strings.HasPrefix(l, "table ") || strings.HasPrefix(l, "chain ") || strings.HasPrefix(l, "type ") {
			continue
		}
		rules = append(rules, l)
	}
	return rules
}

// TestFlannelHostLayout: the rules are flanneld's nftables layout with the
// iptables chains' meaning, readable by nft; a second Ensure changes
// nothing; what someone removes or adds is repaired and reported; no rules
// wanted means no tables.
func TestFlannelHostLayout(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "nftfl")
	ctx := context.Background()
	h := NFTables{}
	ns.Do(t, func() error { return h.Apply(ctx, nftDualStack) })
	want4 := []string{
		"meta mark & 0x00004000 != 0x00000000 return",
		"ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return",
		"ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
		"ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return",
		"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
		"ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
		"ip saddr 10.244.0.0/16 accept",
		"ip daddr 10.244.0.0/16 accept",
	}
	if got := nftRules(t, ns, "ip", NFTTable(family.IPv4).Name); !slices.Equal(got, want4) {
		t.Errorf("table ip %s:\n%s\nwant:\n%s", NFTTable(family.IPv4).Name, strings.Join(got, "\n"), strings.Join(want4, "\n"))
	}
	if got := nftRules(t, ns, "ip6", NFTTable(family.IPv6).Name); len(got) != 8 || got[4] != "ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random" {
		t.Errorf("table ip6 %s:\n%s", NFTTable(family.IPv6).Name, strings.Join(got, "\n"))
	}
	ensure := func() []string {
		var fixed []string
		ns.Do(t, func() (err error) { fixed, err = h.Ensure(ctx, nftDualStack); return err })
		return fixed
	}
	if fixed := ensure(); len(fixed) != 0 {
		t.Errorf("a second Ensure changed %v", fixed)
	}
	ns.Run(t, "nft", "flush", "chain", "ip", NFTTable(family.IPv4).Name, "postrtg")
	ns.Run(t, "nft", "add", "chain", "ip6", NFTTable(family.IPv6).Name, "extra")
	fixed := ensure()
	wantFixed := []string{
		"IPv4 nftables ip flannel-ipv4 postrtg: rules differ (0 found, 6 wanted)",
		"IPv6 nftables ip6 flannel-ipv6 extra: present but not wanted",
	}
	if !slices.Equal(fixed, wantFixed) {
		t.Errorf("Ensure after a flush and an extra chain reported %q, want %q", fixed, wantFixed)
	}
	if got := nftRules(t, ns, "ip", NFTTable(family.IPv4).Name); !slices.Equal(got, want4) {
		t.Errorf("after the repair:\n%s", strings.Join(got, "\n"))
	}
	v4only := nftDualStack
	v4only.Nets, v4only.Forward, v4only.NoRandomFully = v4only.Nets[:1], false, true
	ns.Do(t, func() error { return h.Apply(ctx, v4only) })
	if got := nftRules(t, ns, "ip", NFTTable(family.IPv4).Name); len(got) != 6 || got[5] != "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade" {
		t.Errorf("masquerading only, not fully random:\n%s", strings.Join(got, "\n"))
	}
	if out, err := ns.Try("nft", "list", "table", "ip6", NFTTable(family.IPv6).Name); err == nil {
		t.Errorf("IPv6 table left when IPv6 has no network:\n%s", out)
	}
	ns.Do(t, func() error { return h.Teardown(ctx) })
	if out := ns.Run(t, "nft", "list", "tables"); strings.TrimSpace(out) != "" {
		t.Errorf("tables after Teardown:\n%s", out)
	}
}
