package nftconn

import (
	"testing"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/family"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestRawXTComment reads iptables-nft's comment matches from a raw dump,
// as the quick DELs do, and nothing from a rule without one.
func TestRawXTComment(t *testing.T) {
	ns := netnstest.New(t, "nfxt")
	ns.Run(t, "iptables", "-N", "XT")
	ns.Run(t, "iptables", "-A", "XT", "-s", "10.1.0.5", "-m", "comment", "--comment", "firewall name: n id: c ifname: eth0", "-j", "ACCEPT")
	ns.Run(t, "iptables", "-A", "XT", "-d", "10.1.0.5", "-j", "ACCEPT")
	var got []string
	ns.Do(t, func() error {
		conn, err := Dial()
		if err != nil {
			return err
		}
		defer conn.Close()
		rules, err := conn.DumpRules(&nftables.Table{Name: "filter", Family: TableFamily(family.IPv4)}, "XT")
		for _, r := range rules {
			got = append(got, r.XTComment())
		}
		return err
	})
	if len(got) != 2 || got[0] != "firewall name: n id: c ifname: eth0" || got[1] != "" {
		t.Errorf("comments %q", got)
	}
	for _, exprs := range [][]byte{nil, {1, 2, 3}, {8, 0, 1, 0, 0, 0, 0, 0}} {
		if c := (RawRule{Exprs: exprs}).XTComment(); c != "" {
			t.Errorf("expressions %v read as comment %q", exprs, c)
		}
	}
}
