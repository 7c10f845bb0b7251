package hostport

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"unicode"

	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/family"
)

func TestParseConditions(t *testing.T) {
	tests := []struct {
		conds []string
		f     family.Family
		n     int    // expressions
		cmp   string // the last cmp's data, hex-ish via %x
		err   bool
	}{
		{conds: []string{"ip saddr 10.0.0.0/8"}, n: 3},
		{conds: []string{"ip", "daddr", "!=", "192.0.2.7"}, n: 2},
		{conds: []string{"ip6 saddr fd00::/64", "iifname eth0"}, f: family.IPv6, n: 5},
		{conds: []string{`meta oifname != "cni0"`}, n: 2},
		{conds: nil, n: 0},
		{conds: []string{"ip6 saddr fd00::/64"}, err: true}, // wrong family for conditionsV4
		{conds: []string{"ip saddr 10.0.0.0/8"}, f: family.IPv6, err: true},
		{conds: []string{"tcp dport 22"}, err: true},
		{conds: []string{"ip saddr"}, err: true},
		{conds: []string{"ip saddr ten"}, err: true},
		{conds: []string{"iifname waytoolonginterfacename"}, err: true},
	}
	for _, tt := range tests {
		got, err := ParseConditions(tt.conds, tt.f)
		if (err != nil) != tt.err || len(got) != tt.n {
			t.Errorf("ParseConditions(%q, %v) = %d expressions, %v", tt.conds, tt.f, len(got), err)
		}
		if err != nil && !errors.Is(err, errConditionSyntax) {
			t.Errorf("%q: error %v does not say what is understood", tt.conds, err)
		}
	}
	// Negation and masking land where nft puts them.
	got, _ := ParseConditions([]string{"ip daddr != 10.1.2.0/24"}, family.IPv4)
	if c := got[2].(*expr.Cmp); c.Op != expr.CmpOpNeq || netip.AddrFrom4([4]byte(c.Data)).String() != "10.1.2.0" {
		t.Errorf("cmp = %+v", c)
	}
	if p := got[0].(*expr.Payload); p.Offset != 16 || p.Len != 4 {
		t.Errorf("daddr payload = %+v", p)
	}
}

func TestTag(t *testing.T) {
	for _, a := range []Attachment{{Network: "net", ContainerID: "c1", IfName: "eth0"}, {Network: "n", ContainerID: "id", IfName: `a"b\c%d`}} {
		tag := nftTag(a)
		if strings.Contains(tag, `"`) {
			t.Errorf("tag %q has a quote, which `nft list` cannot print reloadably", tag)
		}
		if got, ok := parseNFTTag(tag); !ok || got != a {
			t.Errorf("parseNFTTag(%q) = %+v, %v", tag, got, ok)
		}
	}
	if _, ok := parseNFTTag("c1"); ok {
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
		a := Attachment{Network: "net", ContainerID: "c1", IfName: ifName}
		if got, ok := parseNFTTag(nftTag(a)); !ok || got != a || strings.Contains(nftTag(a), `"`) {
			t.Fatalf("parseNFTTag(nftTag(%+v)) = %+v, %v", a, got, ok)
		}
	})
}

func TestNFTBuildRules(t *testing.T) {
	c := &Conf{Attachment: Attachment{Network: "net", ContainerID: "c1", IfName: "eth0"}, SNAT: true, MarkBit: 13,
		Maps: []PortMap{
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
	v4 := nftRules(c, netip.MustParsePrefix("10.1.0.5/24"), nil)
	if count(v4, chainHostPorts) != 3 || count(v4, chainMasq) != 1 {
		t.Errorf("IPv4: %d hostports rules (hairpin, localhost, dnat), %d masquerading", count(v4, chainHostPorts), count(v4, chainMasq))
	}
	v6 := nftRules(c, netip.MustParsePrefix("fd00::5/64"), nil)
	if count(v6, chainHostPorts) != 4 || count(v6, chainMasq) != 1 {
		t.Errorf("IPv6: %d hostports rules (hairpin and dnat per mapping), %d masquerading", count(v6, chainHostPorts), count(v6, chainMasq))
	}
	c.SNAT = false
	if rs := nftRules(c, netip.MustParsePrefix("10.1.0.5/24"), nil); len(rs) != 1 || count(rs, chainMasq) != 0 {
		t.Errorf("without snat: %d rules", len(rs))
	}
	dnat := v4[2].exprs[len(v4[2].exprs)-1].(*expr.NAT)
	if dnat.Type != expr.NATTypeDestNAT || !dnat.Specified {
		t.Errorf("last rule of a mapping is %+v, want the DNAT", dnat)
	}
}
