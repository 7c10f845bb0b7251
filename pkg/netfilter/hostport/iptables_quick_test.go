package hostport

import (
	"context"
	"net/netip"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/iptablestest"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestNFTQuickDel adds real rules with iptables-restore in a namespace and
// checks which DELs the netlink path takes on, and that what it leaves is
// exactly the ruleset from before the attachment's ADD.
func TestNFTQuickDel(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	a, b := *testConf(), *testConf()
	b.ContainerID, b.Maps = "c2", []PortMap{{HostPort: 9090, ContainerPort: 90, Protocol: "tcp"}}
	eth1 := a
	eth1.IfName = "eth1"
	addrs := map[string][]netip.Prefix{
		"a":    {netip.MustParsePrefix("10.1.0.5/24"), netip.MustParsePrefix("fd00:1::5/64")},
		"b":    {netip.MustParsePrefix("10.1.0.6/24"), netip.MustParsePrefix("fd00:1::6/64")},
		"eth1": {netip.MustParsePrefix("10.2.0.5/24"), netip.MustParsePrefix("fd00:2::5/64")},
	}
	ns := netnstest.New(t, "quickdel")
	rules := func() string {
		return iptablestest.Ruleset(t, ns, "iptables-save") + iptablestest.Ruleset(t, ns, "ip6tables-save")
	}
	add := func(c *Conf, name string) {
		ns.Do(t, func() error { return IPTables{}.Add(context.Background(), c, addrs[name]) })
	}
	quick := func(att Attachment) (done [2]bool) {
		ns.Do(t, func() error { done = [2]bool{nftQuickDel(family.IPv4, att), nftQuickDel(family.IPv6, att)}; return nil })
		return done
	}

	add(&b, "b")
	onlyB := rules()
	add(&a, "a")
	if done := quick(a.Attachment); done != [2]bool{true, true} {
		t.Fatalf("DEL of one of two attachments: quick %v, want both families done", done)
	}
	if got := rules(); got != onlyB {
		t.Errorf("after the quick DEL of a:\n%s\nwant the ruleset from before its ADD:\n%s", got, onlyB)
	}
	if done := quick(a.Attachment); done != [2]bool{true, true} {
		t.Errorf("DEL of an attachment without rules: quick %v, want done", done)
	}
	if done := quick(b.Attachment); done != [2]bool{false, false} {
		t.Errorf("DEL of the node's last mappings: quick %v, want them left to iptables", done)
	}
	if got := rules(); got != onlyB {
		t.Errorf("a DEL left to iptables changed the ruleset:\n%s", got)
	}
	add(&a, "a")
	add(&eth1, "eth1")
	before := rules()
	if done := quick(a.Attachment); done != [2]bool{false, false} {
		t.Errorf("DEL of eth0 of a container with eth1 in the same chain: quick %v, want it left to iptables", done)
	}
	if got := rules(); got != before {
		t.Errorf("a DEL left to iptables changed the ruleset:\n%s", got)
	}
}
