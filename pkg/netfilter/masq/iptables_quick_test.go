package masq

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestMasqTeardownWithoutProcesses: with iptables-nft, Teardown removes an
// attachment's chains and jumps over netlink, in both families, running no
// iptables at all (PATH empty; the iptables way would skip the families as
// "not installed" and leave the rules), and leaves another attachment's
// rules and an operator's chain alone. A chain holding a rule that is not
// the attachment's is left to iptables, which removes it whole.
func TestMasqTeardownWithoutProcesses(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "masq-quick")
	ctx := context.Background()
	addrs := func(i string) []netip.Prefix {
		return []netip.Prefix{netip.MustParsePrefix("10.88.0." + i + "/24"), netip.MustParsePrefix("fd00:88::" + i + "/64")}
	}
	ns.Do(t, func() error { return IPTables{}.Setup(ctx, Attachment{Network: "net", ContainerID: "c1"}, addrs("2")) })
	ns.Do(t, func() error { return IPTables{}.Setup(ctx, Attachment{Network: "net", ContainerID: "c2"}, addrs("3")) })
	ns.Run(t, "iptables", "-t", "nat", "-N", "KEEP-ME")
	path := os.Getenv("PATH")
	t.Setenv("PATH", "/nonexistent")
	ns.Do(t, func() error { return IPTables{}.Teardown(ctx, Attachment{Network: "net", ContainerID: "c1"}) })
	t.Setenv("PATH", path)
	c1, c2 := ChainName("net", "c1"), ChainName("net", "c2")
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out := ns.Run(t, save, "-t", "nat")
		if strings.Contains(out, c1) || !strings.Contains(out, "-A POSTROUTING -s ") || strings.Count(out, "-j "+c2) != 1 || strings.Count(out, "-A "+c2) != 2 {
			t.Errorf("%s after c1's teardown: want c2's chain and jump only:\n%s", save, out)
		}
	}
	if out := ns.Run(t, "iptables-save", "-t", "nat"); !strings.Contains(out, ":KEEP-ME") {
		t.Errorf("the operator's chain went:\n%s", out)
	}
	ns.Run(t, "iptables", "-t", "nat", "-A", c2, "-j", "RETURN")
	ns.Do(t, func() error { return IPTables{}.Teardown(ctx, Attachment{Network: "net", ContainerID: "c2"}) })
	if out := ns.Run(t, "iptables-save", "-t", "nat"); strings.Contains(out, c2) {
		t.Errorf("c2's chain with a foreign rule was not removed by iptables:\n%s", out)
	}
}
