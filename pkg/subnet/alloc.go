package subnet

import "net/netip"

// slot is a free block and its index from the start of its range.
type slot struct {
	index uint64
	p     netip.Prefix
}

// candidates lists up to maxCandidates free subnets. For dual-stack the k-th
// IPv4 block is paired with the k-th IPv6 block, so that two nodes that pick
// the same IPv4 subnet write the same key and the compare-and-swap lets only
// one of them win; when no such pair is free (IPv6 halves scattered by other
// writers), each free IPv4 block is paired with a free IPv6 one in order.
func (m *Manager) candidates(entries []Entry) []Subnets {
	c := m.Config
	var v4, v6 []slot
	if c.EnableIPv4 {
		v4 = free(entries, c.SubnetMin, c.SubnetMax, c.SubnetLen, func(s Subnets) netip.Prefix { return s.V4 })
	}
	if c.EnableIPv6 {
		v6 = free(entries, c.IPv6SubnetMin, c.IPv6SubnetMax, c.IPv6SubnetLen, func(s Subnets) netip.Prefix { return s.V6 })
	}
	var out []Subnets
	switch {
	case c.EnableIPv4 && !c.EnableIPv6:
		for _, s := range v4 {
			out = append(out, Subnets{V4: s.p})
		}
	case c.EnableIPv6 && !c.EnableIPv4:
		for _, s := range v6 {
			out = append(out, Subnets{V6: s.p})
		}
	default:
		byIndex := map[uint64]netip.Prefix{}
		for _, s := range v6 {
			byIndex[s.index] = s.p
		}
		for _, s := range v4 {
			if p6, ok := byIndex[s.index]; ok {
				out = append(out, Subnets{V4: s.p, V6: p6})
			}
		}
		for i := 0; len(out) == 0 && i < min(len(v4), len(v6)); i++ {
			out = append(out, Subnets{V4: v4[i].p, V6: v6[i].p})
		}
	}
	return out
}

// free walks lo..hi in steps of /bits and returns the blocks no entry
// overlaps, at most maxCandidates of them, with their index from lo.
func free(entries []Entry, lo, hi netip.Addr, bits int, half func(Subnets) netip.Prefix) []slot {
	var out []slot
	var k uint64
	for a, ok := lo, true; ok && !hi.Less(a) && len(out) < maxCandidates; a, ok = addShifted(a, bits, 1) {
		p := netip.PrefixFrom(a, bits)
		used := false
		for _, e := range entries {
			if h := half(e.Subnets); h.IsValid() && h.Overlaps(p) {
				used = true
				break
			}
		}
		if !used {
			out = append(out, slot{k, p})
		}
		k++
	}
	return out
}
