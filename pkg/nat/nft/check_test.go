package nft

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/nat"
)

// checkState is an IPv4 table as a read finds it: the layout, `others`
// attachments of one mapping each, then c's rules (added last, as the
// newest pod's are), without the rule of index drop (-1: none).
func checkState(c *nat.HostPortConf, addr netip.Prefix, others, drop int) *state {
	f := famIPv4
	st := &state{f: f, exists: true, chains: map[string]bool{}, rules: map[string][]*nftables.Rule{}}
	for _, ch := range f.chains() {
		st.chains[ch.Name] = true
	}
	add := func(chain, tag string, r *nftables.Rule) {
		r.Table, r.Chain = f.table(), &nftables.Chain{Name: chain, Table: f.table()}
		if tag != "" {
			r.UserData = comment(tag)
		}
		st.rules[chain] = append(st.rules[chain], r)
	}
	for chain, rules := range skeletonRules() {
		for _, e := range rules {
			add(chain, "", &nftables.Rule{Exprs: e})
		}
	}
	for i := range others {
		o := &nat.HostPortConf{Attachment: nat.Attachment{Network: "net", ContainerID: fmt.Sprintf("other%d", i), IfName: "eth0"},
			SNAT: true, MarkBit: 13, Maps: []nat.PortMap{{HostPort: uint16(40000 + i), ContainerPort: 80, Protocol: "tcp"}}}
		for _, r := range buildRules(o, netip.MustParsePrefix(fmt.Sprintf("10.2.%d.%d/16", i/250, 1+i%250)), nil) {
			add(r.chain, Tag(o.Attachment), &nftables.Rule{Exprs: r.exprs})
		}
	}
	for i, r := range buildRules(c, addr, nil) {
		if i != drop {
			add(r.chain, Tag(c.Attachment), &nftables.Rule{Exprs: r.exprs})
		}
	}
	return st
}

func manyMaps(n int) *nat.HostPortConf {
	c := &nat.HostPortConf{Attachment: nat.Attachment{Network: "net", ContainerID: "c1", IfName: "eth0"}, SNAT: true, MarkBit: 13}
	for i := range n {
		c.Maps = append(c.Maps, nat.PortMap{HostPort: uint16(10000 + i), ContainerPort: 80, Protocol: "tcp"})
	}
	return c
}

// TestCheckFindsEachRule: an intact attachment passes; one rule missing,
// or another attachment's copy of it, fails naming the rule.
func TestCheckFindsEachRule(t *testing.T) {
	addr := netip.MustParsePrefix("10.1.0.5/24")
	c := manyMaps(20)
	want := buildRules(c, addr, nil)
	if err := checkState(c, addr, 20, -1).check(Tag(c.Attachment), want); err != nil {
		t.Fatalf("intact: %v", err)
	}
	if err := checkState(c, addr, 20, 31).check(Tag(c.Attachment), want); err == nil || !strings.Contains(err.Error(), "rule 32 ") {
		t.Errorf("rule 32 missing: %v", err)
	}
	other := *c
	other.Attachment.ContainerID = "c2"
	if err := checkState(c, addr, 0, -1).check(Tag(other.Attachment), want); err == nil {
		t.Error("another attachment's CHECK passed on c's rules")
	}
	if err := checkState(c, addr, 0, -1).check(Tag(c.Attachment), append(want, want[0])); err == nil {
		t.Error("a rule wanted twice was found once and passed")
	}
}

// TestCheckScalesLinearly counts, not times: CHECK of 4 times the mappings
// among 4 times the other attachments' rules allocates about 4 times as
// much. Scanning the chain for each wanted rule (the rules of every
// attachment share it) grew 16 times.
func TestCheckScalesLinearly(t *testing.T) {
	addr := netip.MustParsePrefix("10.1.0.5/24")
	allocs := map[int]float64{}
	for _, n := range []int{100, 400} {
		c := manyMaps(n)
		st, want := checkState(c, addr, n, -1), buildRules(c, addr, nil)
		allocs[n] = testing.AllocsPerRun(3, func() {
			if err := st.check(Tag(c.Attachment), want); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Logf("allocations per CHECK by mappings: %v", allocs)
	if ratio := allocs[400] / allocs[100]; ratio > 5 {
		t.Errorf("allocations grew %.1f times for 4 times the rules (%v), want about 4", ratio, allocs)
	}
}
