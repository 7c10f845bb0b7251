package hostport

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// checkState is an IPv4 table as a read finds it: the layout, `others`
// attachments of one mapping each, then c's rules (added last, as the
// newest pod's are), without the rule of index drop (-1: none).
func checkState(c *Conf, addr netip.Prefix, others, drop int) *state {
	f := family.IPv4
	st := &state{f: f, exists: true, chains: map[string]bool{}, rules: map[string][]*nftables.Rule{}}
	for _, ch := range nftChains(f) {
		st.chains[ch.Name] = true
	}
	add := func(chain, tag string, r *nftables.Rule) {
		r.Table, r.Chain = NFTTable(f), &nftables.Chain{Name: chain, Table: NFTTable(f)}
		if tag != "" {
			r.UserData = nftconn.Comment(tag)
		}
		st.rules[chain] = append(st.rules[chain], r)
	}
	for chain, rules := range skeletonRules() {
		for _, e := range rules {
			add(chain, "", &nftables.Rule{Exprs: e})
		}
	}
	for i := range others {
		o := &Conf{Attachment: Attachment{Network: "net", ContainerID: fmt.Sprintf("other%d", i), IfName: "eth0"},
			SNAT: true, MarkBit: 13, Maps: []PortMap{{HostPort: uint16(40000 + i), ContainerPort: 80, Protocol: "tcp"}}}
		for _, r := range nftRules(o, netip.MustParsePrefix(fmt.Sprintf("10.2.%d.%d/16", i/250, 1+i%250)), nil) {
			add(r.chain, nftTag(o.Attachment), &nftables.Rule{Exprs: r.exprs})
		}
	}
	for i, r := range nftRules(c, addr, nil) {
		if i != drop {
			add(r.chain, nftTag(c.Attachment), &nftables.Rule{Exprs: r.exprs})
		}
	}
	return st
}

// TestCheckFindsEachRule: an intact attachment passes; one rule missing,
// or another attachment's copy of it, fails naming the rule.
func TestCheckFindsEachRule(t *testing.T) {
	addr := netip.MustParsePrefix("10.1.0.5/24")
	c := manyMaps(20)
	want := nftRules(c, addr, nil)
	if err := checkState(c, addr, 20, -1).check(nftTag(c.Attachment), want); err != nil {
		t.Fatalf("intact: %v", err)
	}
	if err := checkState(c, addr, 20, 31).check(nftTag(c.Attachment), want); err == nil || !strings.Contains(err.Error(), "rule 32 ") {
		t.Errorf("rule 32 missing: %v", err)
	}
	other := *c
	other.Attachment.ContainerID = "c2"
	if err := checkState(c, addr, 0, -1).check(nftTag(other.Attachment), want); err == nil {
		t.Error("another attachment's CHECK passed on c's rules")
	}
	if err := checkState(c, addr, 0, -1).check(nftTag(c.Attachment), append(want, want[0])); err == nil {
		t.Error("a rule wanted twice was found once and passed")
	}
}

// TestCheckScalesLinearly counts, not times: CHECK of 4 times the mappings
// among 4 times the other attachments' rules allocates about 4 times as
// much. Scanning the chain for each wanted rule (the rules of every
// attachment share it) grew 16 times.
func TestNFTCheckScalesLinearly(t *testing.T) {
	addr := netip.MustParsePrefix("10.1.0.5/24")
	allocs := map[int]float64{}
	for _, n := range []int{100, 400} {
		c := manyMaps(n)
		st, want := checkState(c, addr, n, -1), nftRules(c, addr, nil)
		allocs[n] = testing.AllocsPerRun(3, func() {
			if err := st.check(nftTag(c.Attachment), want); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Logf("allocations per CHECK by mappings: %v", allocs)
	if ratio := allocs[400] / allocs[100]; ratio > 5 {
		t.Errorf("allocations grew %.1f times for 4 times the rules (%v), want about 4", ratio, allocs)
	}
}
