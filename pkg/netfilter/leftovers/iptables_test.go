package leftovers

import (
	"context"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/netfilter/iptablestest"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
)

func TestResetIPTables(t *testing.T) {
	mc := masq.ChainName("cbr0", "abc")
	dn := "CNI-DN-0123456789abcdef01234" // an attachment's port-mapping chain
	v4 := `*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-POSTROUTING - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:` + dn + ` - [0:0]
:` + mc + ` - [0:0]
:CNI-FIREWALL - [0:0]
:FLANNEL-POSTRTG - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -s 10.1.0.2/32 -m comment --comment "name: \"cbr0\" id: \"abc\"" -j ` + mc + `
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A POSTROUTING -j KUBE-POSTROUTING
-A CNI-HOSTPORT-DNAT -p tcp -j ` + dn + `
-A ` + dn + ` -p tcp -j DNAT --to-destination 10.1.0.2:80
-A ` + mc + ` ! -d 224.0.0.0/4 -j MASQUERADE
-A CNI-FIREWALL -j ACCEPT
COMMIT
*filter
:FORWARD ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
:CNI-FORWARD - [0:0]
:CNI-ADMIN - [0:0]
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT
-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
-A CNI-FORWARD -s 10.1.0.2/32 -j ACCEPT
COMMIT
`
	for _, dry := range []bool{true, false} {
		f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": v4, "ip6tables-save": "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"}}
		got, err := ResetIPTables(context.Background(), f, dry)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range got {
			names = append(names, l.String())
		}
		want := []string{
			"iptables -t nat chain " + mc + " (1 rule, jumps from POSTROUTING)",
			"iptables -t nat chain " + dn + " (1 rule)",
			"iptables -t nat chain CNI-HOSTPORT-DNAT (1 rule, jumps from PREROUTING)",
			"iptables -t nat chain FLANNEL-POSTRTG (0 rules, jumps from POSTROUTING)",
			"iptables -t filter chain CNI-ADMIN (0 rules)",
			"iptables -t filter chain CNI-FORWARD (2 rules, jumps from FORWARD)",
			"iptables -t filter chain FLANNEL-FWD (1 rule, jumps from FORWARD)",
		}
		if strings.Join(names, "\n") != strings.Join(want, "\n") {
			t.Errorf("found\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
		}
		restored := f.Payload("iptables-restore")
		if dry {
			if len(f.Restores) != 0 {
				t.Errorf("dry run restored %v", f.Restores)
			}
			continue
		}
		// Chains are flushed first, then the outside jumps go, then the
		// chains; the jump between two suite chains is never deleted
		// by itself (the flush took it), which would fail the restore.
		wantNat := ":" + mc + " - [0:0]\n:" + dn + " - [0:0]\n:CNI-HOSTPORT-DNAT - [0:0]\n:FLANNEL-POSTRTG - [0:0]\n" +
			"-D POSTROUTING -s 10.1.0.2/32 -m comment --comment \"name: \\\"cbr0\\\" id: \\\"abc\\\"\" -j " + mc + "\n" +
			"-D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT\n" +
			"-D POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n" +
			"-X " + mc + "\n-X " + dn + "\n-X CNI-HOSTPORT-DNAT\n-X FLANNEL-POSTRTG\n"
		if !strings.Contains(restored, "*nat\n"+wantNat+"COMMIT\n") {
			t.Errorf("restored\n%s\nwant the nat part\n%s", restored, wantNat)
		}
		if !strings.Contains(restored, "*filter\n:CNI-ADMIN - [0:0]\n:CNI-FORWARD - [0:0]\n:FLANNEL-FWD - [0:0]\n"+
			"-D FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n"+
			"-D FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n-X CNI-ADMIN\n-X CNI-FORWARD\n-X FLANNEL-FWD\nCOMMIT\n") {
			t.Errorf("restored filter part wrong:\n%s", restored)
		}
		for _, foreign := range []string{"KUBE-POSTROUTING", "CNI-FIREWALL"} {
			if strings.Contains(restored, foreign) {
				t.Errorf("reset touches %s:\n%s", foreign, restored)
			}
		}
		if v6 := f.Payload("ip6tables-restore"); v6 != "" {
			t.Errorf("an IPv6 family without suite chains was restored: %q", v6)
		}
	}
}
