package nft

import (
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/nat"
)

// The reference's nftables layout: one table per family, two base chains
// that send local destinations to hostports_all, which visits
// hostip_hostports (kept empty, as the reference now does) and hostports,
// where the attachments' rules live; masquerading is the postrouting chain.
const (
	TableName      = "cni_hostport"
	chainPre       = "prerouting"
	chainOut       = "output"
	chainAll       = "hostports_all"
	chainHostIP    = "hostip_hostports"
	chainHostPorts = "hostports"
	chainMasq      = "masquerading"
)

// ruleChains hold attachments' rules.
var ruleChains = []string{chainHostPorts, chainHostIP, chainMasq}

// fam is one nftables family with its header offsets.
type fam struct {
	family       nftables.TableFamily
	nfproto      uint32
	saddr, daddr uint32 // offsets in the network header
	addrLen      uint32
}

var (
	famIPv4 = fam{nftables.TableFamilyIPv4, unix.NFPROTO_IPV4, 12, 16, 4}
	famIPv6 = fam{nftables.TableFamilyIPv6, unix.NFPROTO_IPV6, 8, 24, 16}
	fams    = []fam{famIPv4, famIPv6}
)

func famOf(a netip.Addr) fam {
	if a.Is6() {
		return famIPv6
	}
	return famIPv4
}

func (f fam) table() *nftables.Table { return &nftables.Table{Name: TableName, Family: f.family} }

// chains returns the six chains of the layout, base chains with their hooks.
func (f fam) chains() []*nftables.Chain {
	t := f.table()
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

// comment is a rule comment as nft writes it, so `nft list` shows the tag.
func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

// ruleComment is a rule's comment: "" when it has none, or when its user
// data, which any program may have written, is not a well-formed run of
// type-length-value items (the library's reader would index past it).
func ruleComment(r *nftables.Rule) string {
	for ud := r.UserData; len(ud) > 0; ud = ud[2+int(ud[1]):] {
		if len(ud) < 2 || len(ud) < 2+int(ud[1]) {
			return ""
		}
	}
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// Tag is the comment of an attachment's rules: the iptables backend's tag
// without its quotes, since nft prints comments between double quotes
// that it cannot escape (and `nft list ruleset` must stay loadable). The
// three names hold no whitespace (CNI forbids it); the few characters of
// an interface name that would break the quoting are percent-encoded.
func Tag(a nat.Attachment) string {
	return "dnat name: " + a.Network + " id: " + a.ContainerID + " ifname: " + ifnameEscaper.Replace(a.IfName)
}

var (
	ifnameEscaper   = strings.NewReplacer("%", "%25", `"`, "%22", `\`, "%5C")
	ifnameUnescaper = strings.NewReplacer("%25", "%", "%22", `"`, "%5C", `\`)
)

// ParseTag reads back a Tag.
func ParseTag(s string) (nat.Attachment, bool) {
	f := strings.Fields(s)
	if len(f) != 7 || f[0] != "dnat" || f[1] != "name:" || f[3] != "id:" || f[5] != "ifname:" {
		return nat.Attachment{}, false
	}
	return nat.Attachment{Network: f[2], ContainerID: f[4], IfName: ifnameUnescaper.Replace(f[6])}, true
}

// attRule is one rule of an attachment and the chain it goes in.
type attRule struct {
	chain string
	exprs []expr.Any
}

// buildRules lays out an attachment's rules for one container address:
// in hostports, per mapping, the rules that mark hairpin and localhost
// connections for masquerading and the DNAT rule (nat statements end the
// chain, so the marks come first); in masquerading, one rule that
// masquerades marked connections to the container. This is the iptables
// backend's logic: markMasqBit and masqAll mean the same in both.
func buildRules(c *nat.HostPortConf, container netip.Prefix, conds []expr.Any) []attRule {
	addr := container.Addr()
	f := famOf(addr)
	var out []attRule
	for _, m := range c.MapsFor(addr) {
		match := append(append([]expr.Any{}, conds...), f.dstMatch(m)...)
		if c.SNAT {
			src := container.Masked()
			if c.MasqAll {
				src = netip.PrefixFrom(addr, 0)
			}
			out = append(out, attRule{chainHostPorts, concat(match, f.srcMatch(src), setMark(c.MarkValue()))})
			if addr.Is4() && !c.MasqAll {
				lo := netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 32)
				out = append(out, attRule{chainHostPorts, concat(match, f.srcMatch(lo), setMark(c.MarkValue()))})
			}
		}
		out = append(out, attRule{chainHostPorts, concat(match, f.dnat(addr, m.ContainerPort))})
	}
	if c.SNAT && len(out) > 0 {
		out = append(out, attRule{chainMasq, concat(hasMark(c.MarkValue()), f.addrMatch(f.daddr, netip.PrefixFrom(addr, addr.BitLen()), false), []expr.Any{&expr.Masq{}})})
	}
	return out
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// dstMatch matches a mapping's host IP (when one is given), protocol and
// host port.
func (f fam) dstMatch(m nat.PortMap) []expr.Any {
	var out []expr.Any
	if m.HostIP.IsValid() && !m.HostIP.IsUnspecified() {
		out = f.addrMatch(f.daddr, netip.PrefixFrom(m.HostIP, m.HostIP.BitLen()), false)
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
func (f fam) srcMatch(p netip.Prefix) []expr.Any {
	if p.Bits() == 0 {
		return nil
	}
	return f.addrMatch(f.saddr, p, false)
}

// addrMatch compares the address at offset with a prefix, masking first
// unless it is a single address.
func (f fam) addrMatch(offset uint32, p netip.Prefix, negate bool) []expr.Any {
	op := expr.CmpOpEq
	if negate {
		op = expr.CmpOpNeq
	}
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: f.addrLen}}
	if p.Bits() < p.Addr().BitLen() {
		mask := netip.PrefixFrom(p.Addr(), p.Bits())
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: f.addrLen, Mask: prefixMask(mask), Xor: make([]byte, f.addrLen)})
	}
	return append(out, &expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

func prefixMask(p netip.Prefix) []byte {
	mask := make([]byte, p.Addr().BitLen()/8)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return mask
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

// hasMark is "meta mark & value != 0".
func hasMark(value uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(value), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// dnat is "dnat to addr:port".
func (f fam) dnat(addr netip.Addr, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: addr.AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(port)},
		// The max registers and the flag are what nft itself writes (and
		// the kernel reports back), so CHECK compares like with like.
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.nfproto, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 2, RegProtoMax: 2, Specified: true},
	}
}
