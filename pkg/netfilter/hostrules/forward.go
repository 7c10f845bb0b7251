package hostrules

import (
	"bytes"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// ForwardDrops lists, as "family table chain", the base chains at the
// forward hook whose policy is drop and that do not accept network both as
// source and as destination (a rule matching it and ending in accept).
// nftables runs every base chain of a hook and a drop in any is final, so
// flannel's own forward chain cannot make up for such a chain. With
// skipIPTables the chain iptables-nft makes (FORWARD of table filter) is
// left to iptables-save's reading. Accepts reached through jumps are not
// followed.
func ForwardDrops(network netip.Prefix, skipIPTables bool) ([]string, error) {
	conn, err := nftconn.Dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	chains, err := conn.ListChains()
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	f := family.OfPrefix(network)
	var drops []string
	for _, c := range chains {
		if !dropsForwarded(c, f) || (skipIPTables && c.Table.Name == "filter" && c.Name == "FORWARD") {
			continue
		}
		rules, err := conn.GetRules(c.Table, c)
		if err != nil {
			return nil, fmt.Errorf("listing the rules of %s %s: %w", c.Table.Name, c.Name, err)
		}
		if !acceptsNet(f, rules, nftconn.Saddr, network) || !acceptsNet(f, rules, nftconn.Daddr, network) {
			drops = append(drops, nftconn.FamilyName(c.Table.Family)+" "+c.Table.Name+" "+c.Name)
		}
	}
	return drops, nil
}

// dropsForwarded tells whether c is a base chain at the forward hook of a
// table that sees f's packets, with a drop policy.
func dropsForwarded(c *nftables.Chain, f family.Family) bool {
	return c.Hooknum != nil && *c.Hooknum == *nftables.ChainHookForward && c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop &&
		(c.Table.Family == nftconn.TableFamily(f) || c.Table.Family == nftables.TableFamilyINet)
}

// acceptsNet tells whether a rule accepts every packet whose address a
// lies in p: it matches a prefix containing p and ends in accept.
func acceptsNet(f family.Family, rules []*nftables.Rule, a nftconn.Addr, p netip.Prefix) bool {
	for _, r := range rules {
		if len(r.Exprs) == 0 {
			continue
		}
		if v, ok := r.Exprs[len(r.Exprs)-1].(*expr.Verdict); !ok || v.Kind != expr.VerdictAccept {
			continue
		}
		if m, ok := addrPrefix(f, r.Exprs, a); ok && m.Bits() <= p.Bits() && m.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// addrPrefix reads the prefix a rule compares the address a with,
// in either form nft writes: a load of the whole address, masked or not,
// or of the prefix's whole bytes only; ok is false for any other match on
// that address.
func addrPrefix(f family.Family, exprs []expr.Any, a nftconn.Addr) (netip.Prefix, bool) {
	addrLen := uint32(f.Bits() / 8)
	for i, e := range exprs {
		load, isLoad := e.(*expr.Payload)
		if !isLoad || load.Base != expr.PayloadBaseNetworkHeader || load.Offset != a.Offset(f) || load.Len > addrLen || i+1 >= len(exprs) {
			continue
		}
		data, ones := make([]byte, addrLen), int(load.Len)*8
		next := exprs[i+1]
		if bw, ok := next.(*expr.Bitwise); ok && i+2 < len(exprs) {
			ones = 0
			for _, b := range bw.Mask {
				ones += bits.OnesCount8(b)
			}
			next = exprs[i+2]
		}
		cmp, ok := next.(*expr.Cmp)
		if !ok || cmp.Op != expr.CmpOpEq || len(cmp.Data) > len(data) {
			return netip.Prefix{}, false
		}
		copy(data, cmp.Data)
		addr, _ := netip.AddrFromSlice(data)
		pfx := netip.PrefixFrom(addr, ones)
		return pfx, bytes.Equal(pfx.Masked().Addr().AsSlice(), addr.AsSlice())
	}
	return netip.Prefix{}, false
}
