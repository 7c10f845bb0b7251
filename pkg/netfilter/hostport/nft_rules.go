package hostport

import (
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// The reference's nftables layout: one table per family, two base chains
// that send local destinations to hostports_all, which visits
// hostip_hostports (kept empty, as the reference now does) and hostports,
// where the attachments' rules live; masquerading is the postrouting chain.
const (
	nftTableName   = "cni_hostport"
	chainPre       = "prerouting"
	chainOut       = "output"
	chainAll       = "hostports_all"
	chainHostIP    = "hostip_hostports"
	chainHostPorts = "hostports"
	chainMasq      = "masquerading"
)

// ruleChains hold attachments' rules.
var ruleChains = []string{chainHostPorts, chainHostIP, chainMasq}

// nftChains returns the six chains of f's table, base chains with their
// hooks.
func nftChains(f family.Family) []*nftables.Chain {
	t := NFTTable(f)
	nat := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeNAT, Hooknum: hook, Priority: prio}
	}
	return []*nftables.Chain{
		{Name: chainHostPorts, Table: t},
		{Name: chainHostIP, Table: t},
		{Name: chainAll, Table: t},
		nat(chainPre, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
		nat(chainOut, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
		nat(chainMasq, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
	}
}

// skeletonRules are the fixed rules of the layout, by chain.
func skeletonRules() map[string][][]expr.Any {
	local := []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		jump(chainAll),
	}
	return map[string][][]expr.Any{
		chainPre: {local},
		chainOut: {local},
		chainAll: {{jump(chainHostIP)}, {jump(chainHostPorts)}},
	}
}

func jump(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

// nftTag is the comment of an attachment's rules: the iptables backend's
// tag without its quotes, since nft prints comments between double quotes
// that it cannot escape (and `nft list ruleset` must stay loadable). The
// three names hold no whitespace (CNI forbids it); the few characters of
// an interface name that would break the quoting are percent-encoded.
func nftTag(a Attachment) string {
	return "dnat name: " + a.Network + " id: " + a.ContainerID + " ifname: " + ifnameEscaper.Replace(a.IfName)
}

var (
	ifnameEscaper   = strings.NewReplacer("%", "%25", `"`, "%22", `\`, "%5C")
	ifnameUnescaper = strings.NewReplacer("%25", "%", "%22", `"`, "%5C", `\`)
)

// parseNFTTag reads back an nftTag.
func parseNFTTag(s string) (Attachment, bool) {
	f := strings.Fields(s)
	if len(f) != 7 || f[0] != "dnat" || f[1] != "name:" || f[3] != "id:" || f[5] != "ifname:" {
		return Attachment{}, false
	}
	return Attachment{Network: f[2], ContainerID: f[4], IfName: ifnameUnescaper.Replace(f[6])}, true
}

// attRule is one rule of an attachment and the chain it goes in.
type attRule struct {
	chain string
	exprs []expr.Any
}

// nftRules renders the plan of the attachment's rules for one container
// address: in hostports the plan's rules, each after the conditions; in
// masquerading, with snat, one rule that masquerades marked connections
// to the container.
func nftRules(c *Conf, container netip.Prefix, conds []expr.Any) []attRule {
	addr := container.Addr()
	steps, hairpin := c.plan(container)
	var out []attRule
	for _, s := range steps {
		match := nftconn.Concat(conds, dstMatch(s.PortMap))
		switch s.kind {
		case markHairpin:
			out = append(out, attRule{chainHostPorts, nftconn.Concat(match, srcMatch(hairpin), setMark(c.markValue()))})
		case markLocalhost:
			lo := netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 32)
			out = append(out, attRule{chainHostPorts, nftconn.Concat(match, srcMatch(lo), setMark(c.markValue()))})
		case forward:
			out = append(out, attRule{chainHostPorts, nftconn.Concat(match, dnat(addr, s.ContainerPort))})
		}
	}
	if c.SNAT && len(out) > 0 {
		to := nftconn.AddrMatch(nftconn.Daddr, netip.PrefixFrom(addr, addr.BitLen()), false)
		out = append(out, attRule{chainMasq, nftconn.Concat(nftconn.HasMark(c.markValue()), to, []expr.Any{&expr.Masq{}})})
	}
	return out
}

// dstMatch matches a mapping's host IP (when one is given), protocol and
// host port.
func dstMatch(m PortMap) []expr.Any {
	var out []expr.Any
	if m.boundToHostIP() {
		out = nftconn.AddrMatch(nftconn.Daddr, netip.PrefixFrom(m.HostIP, m.HostIP.BitLen()), false)
	}
	return append(out,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNumber(m.Protocol)}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.HostPort)},
	)
}

func protoNumber(p string) byte {
	switch p {
	case "udp":
		return unix.IPPROTO_UDP
	case "sctp":
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

// srcMatch matches a source prefix; /0 matches everything.
func srcMatch(p netip.Prefix) []expr.Any {
	if p.Bits() == 0 {
		return nil
	}
	return nftconn.AddrMatch(nftconn.Saddr, p, false)
}

// setMark is "meta mark set meta mark | value".
func setMark(value uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^value), Xor: binaryutil.NativeEndian.PutUint32(value)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// dnat is "dnat to addr:port".
func dnat(addr netip.Addr, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: addr.AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(port)},
		// The max registers and the flag are what nft itself writes (and
		// the kernel reports back), so CHECK compares like with like.
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(family.Of(addr).Netlink()), RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 2, RegProtoMax: 2, Specified: true},
	}
}
