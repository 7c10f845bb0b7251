package subnet

import "net/netip"

// addShifted adds n<<(bits-subnetLen) to a, one code path for both families.
// ok is false when the sum leaves the address space.
func addShifted(a netip.Addr, subnetLen int, n uint64) (netip.Addr, bool) {
	b := a.As16()
	shift := a.BitLen() - subnetLen // bit position, from the right, of the subnet's last bit
	byteIdx, bit := 15-shift/8, uint(shift%8)
	// Add n<<bit starting at byteIdx, carrying to the left.
	carry := uint64(0)
	v := n
	for i := byteIdx; i >= 0; i-- {
		if v == 0 && carry == 0 {
			break
		}
		sum := uint64(b[i]) + (v&0xff)<<bit + carry
		b[i] = byte(sum)
		carry = sum >> 8
		v >>= 8
	}
	if v != 0 || carry != 0 {
		return netip.Addr{}, false
	}
	// An IPv4 sum that ran into the v4-mapped prefix of As16 has overflowed.
	if orig := a.As16(); a.Is4() && [12]byte(orig[:12]) != [12]byte(b[:12]) {
		return netip.Addr{}, false
	}
	out := netip.AddrFrom16(b)
	if a.Is4() {
		out = out.Unmap()
	}
	return out, true
}

// nthSubnet returns the address of the n-th /subnetLen block after base.
func nthSubnet(base netip.Addr, subnetLen int, n uint64) netip.Addr {
	a, _ := addShifted(base, subnetLen, n)
	return a
}

// lastSubnet returns the address of the last /subnetLen block inside n.
func lastSubnet(n netip.Prefix, subnetLen int) netip.Addr {
	b := n.Addr().As16()
	hostBits := n.Addr().BitLen() - n.Bits()
	// Set every host bit of the network, then clear those below the subnet.
	for i := 0; i < hostBits; i++ {
		pos := 127 - i
		b[pos/8] |= 1 << (7 - uint(pos%8))
	}
	a := netip.AddrFrom16(b)
	if n.Addr().Is4() {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, subnetLen).Masked().Addr()
}
