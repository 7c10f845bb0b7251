package nft

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"unicode"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/nat"
)

func TestParseConditions(t *testing.T) {
	tests := []struct {
		conds []string
		v6    bool
		n     int    // expressions
		cmp   string // the last cmp's data, hex-ish via %x
		err   bool
	}{
		{conds: []string{"ip saddr 10.0.0.0/8"}, n: 3},
		{conds: []string{"ip", "daddr", "!=", "192.0.2.7"}, n: 2},
		{conds: []string{"ip6 saddr fd00::/64", "iifname eth0"}, v6: true, n: 5},
		{conds: []string{`meta oifname != "cni0"`}, n: 2},
		{conds: nil, n: 0},
		{conds: []string{"ip6 saddr fd00::/64"}, err: true}, // wrong family for conditionsV4
		{conds: []string{"ip saddr 10.0.0.0/8"}, v6: true, err: true},
		{conds: []string{"tcp dport 22"}, err: true},
		{conds: []string{"ip saddr"}, err: true},
		{conds: []string{"ip saddr ten"}, err: true},
		{conds: []string{"iifname waytoolonginterfacename"}, err: true},
	}
	for _, tt := range tests {
		got, err := ParseConditions(tt.conds, tt.v6)
		if (err != nil) != tt.err || len(got) != tt.n {
			t.Errorf("ParseConditions(%q, v6=%v) = %d expressions, %v", tt.conds, tt.v6, len(got), err)
		}
		if err != nil && !errors.Is(err, errConditionSyntax) {
			t.Errorf("%q: error %v does not say what is understood", tt.conds, err)
		}
	}
	// Negation and masking land where nft puts them.
	got, _ := ParseConditions([]string{"ip daddr != 10.1.2.0/24"}, false)
	if c := got[2].(*expr.Cmp); c.Op != expr.CmpOpNeq || netip.AddrFrom4([4]byte(c.Data)).String() != "10.1.2.0" {
		t.Errorf("cmp = %+v", c)
	}
	if p := got[0].(*expr.Payload); p.Offset != 16 || p.Len != 4 {
		t.Errorf("daddr payload = %+v", p)
	}
}

func TestTag(t *testing.T) {
	for _, a := range []nat.Attachment{{Network: "net", ContainerID: "c1", IfName: "eth0"}, {Network: "n", ContainerID: "id", IfName: `a"b\c%d`}} {
		tag := Tag(a)
		if strings.Contains(tag, `"`) {
			t.Errorf("tag %q has a quote, which `nft list` cannot print reloadably", tag)
		}
		if got, ok := ParseTag(tag); !ok || got != a {
			t.Errorf("ParseTag(%q) = %+v, %v", tag, got, ok)
		}
	}
	if _, ok := ParseTag("c1"); ok {
		t.Error("the reference's bare container ID parsed as a tag")
	}
}

func FuzzTag(f *testing.F) {
	f.Add("eth0")
	f.Fuzz(func(t *testing.T, ifName string) {
		if strings.ContainsFunc(ifName, unicode.IsSpace) {
			return // CNI rejects whitespace in interface names
		}
		if ifName == "" {
			return // and requires one
		}
		a := nat.Attachment{Network: "net", ContainerID: "c1", IfName: ifName}
		if got, ok := ParseTag(Tag(a)); !ok || got != a || strings.Contains(Tag(a), `"`) {
			t.Fatalf("ParseTag(Tag(%+v)) = %+v, %v", a, got, ok)
		}
	})
}

func TestBuildRules(t *testing.T) {
	c := &nat.HostPortConf{Attachment: nat.Attachment{Network: "net", ContainerID: "c1", IfName: "eth0"}, SNAT: true, MarkBit: 13,
		Maps: []nat.PortMap{
			{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
			{HostPort: 9090, ContainerPort: 90, Protocol: "udp", HostIP: netip.MustParseAddr("2001:db8::1")},
		}}
	count := func(rs []attRule, chain string) int {
		n := 0
		for _, r := range rs {
			if r.chain == chain {
				n++
			}
		}
		return n
	}
	v4 := buildRules(c, netip.MustParsePrefix("10.1.0.5/24"), nil)
	if count(v4, chainHostPorts) != 3 || count(v4, chainMasq) != 1 {
		t.Errorf("IPv4: %d hostports rules (hairpin, localhost, dnat), %d masquerading", count(v4, chainHostPorts), count(v4, chainMasq))
	}
	v6 := buildRules(c, netip.MustParsePrefix("fd00::5/64"), nil)
	if count(v6, chainHostPorts) != 4 || count(v6, chainMasq) != 1 {
		t.Errorf("IPv6: %d hostports rules (hairpin and dnat per mapping), %d masquerading", count(v6, chainHostPorts), count(v6, chainMasq))
	}
	c.SNAT = false
	if rs := buildRules(c, netip.MustParsePrefix("10.1.0.5/24"), nil); len(rs) != 1 || count(rs, chainMasq) != 0 {
		t.Errorf("without snat: %d rules", len(rs))
	}
	dnat := v4[2].exprs[len(v4[2].exprs)-1].(*expr.NAT)
	if dnat.Type != expr.NATTypeDestNAT || !dnat.Specified {
		t.Errorf("last rule of a mapping is %+v, want the DNAT", dnat)
	}
}

// TestRuleCommentMalformed: user data another program wrote badly reads as
// no comment, never a panic.
func TestRuleCommentMalformed(t *testing.T) {
	good := comment("dnat name: n id: c ifname: eth0")
	for _, ud := range [][]byte{{0}, {0, 9, 'x'}, {1, 200}, append(append([]byte{}, good...), 0, 5)} {
		if c := ruleComment(&nftables.Rule{UserData: ud}); c != "" {
			t.Errorf("user data %v read as comment %q", ud, c)
		}
	}
	if c := ruleComment(&nftables.Rule{UserData: good}); c != "dnat name: n id: c ifname: eth0" {
		t.Errorf("a well-formed comment read as %q", c)
	}
}
