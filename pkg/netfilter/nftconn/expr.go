package nftconn

import (
	"bytes"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
)

// TableFamily is f as nftables names a table's family: NFPROTO_IPV4 or
// NFPROTO_IPV6, which netlink's address family values equal.
func TableFamily(f family.Family) nftables.TableFamily { return nftables.TableFamily(f.Netlink()) }

// FamilyName is a table family as nft names it: ip, ip6 or inet.
func FamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return "ip"
}

// Addr is an address field of the network header.
type Addr uint8

const (
	Saddr Addr = iota
	Daddr
)

// addrOffsets are the fields' offsets in the network header, by family.
var addrOffsets = [2][2]uint32{family.IPv4: {Saddr: 12, Daddr: 16}, family.IPv6: {Saddr: 8, Daddr: 24}}

// Offset is where the field lies in f's network header.
func (a Addr) Offset(f family.Family) uint32 { return addrOffsets[f][a] }

// AddrMatch compares the address field (of p's family) with p, masking
// first unless p is a single address; negate makes it "!=".
func AddrMatch(a Addr, p netip.Prefix, negate bool) []expr.Any {
	f := family.OfPrefix(p)
	op := expr.CmpOpEq
	if negate {
		op = expr.CmpOpNeq
	}
	addrLen := uint32(f.Bits() / 8)
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: a.Offset(f), Len: addrLen}}
	if p.Bits() < p.Addr().BitLen() {
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: addrLen, Mask: prefixMask(p), Xor: make([]byte, addrLen)})
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

// IsFamily is "meta nfproto ipv4" (or ipv6), which an inet table's rule
// needs before it reads an address: nft adds it ahead of a rule's first
// ip or ip6 match.
func IsFamily(f family.Family) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(f.Netlink())}},
	}
}

// HasMark is "meta mark & value != 0".
func HasMark(value uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(value), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// Concat joins parts of a rule.
func Concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// SameExprs compares expressions of a table of family f by their netlink
// encoding.
func SameExprs(f family.Family, a, b []expr.Any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		ea, err1 := expr.Marshal(byte(TableFamily(f)), a[i])
		eb, err2 := expr.Marshal(byte(TableFamily(f)), b[i])
		if err1 != nil || err2 != nil || !bytes.Equal(ea, eb) {
			return false
		}
	}
	return true
}

// Comment is a rule comment as nft writes it, so `nft list` shows it.
func Comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

// RuleComment is a rule's comment: "" when it has none, or when its user
// data, which any program may have written, is not a well-formed run of
// type-length-value items (the library's reader would index past it).
func RuleComment(r *nftables.Rule) string {
	for ud := r.UserData; len(ud) > 0; ud = ud[2+int(ud[1]):] {
		if len(ud) < 2 || len(ud) < 2+int(ud[1]) {
			return ""
		}
	}
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// XTComment is a rule's comment match as iptables-nft stores it; "" for
// none.
func XTComment(r *nftables.Rule) string {
	for _, e := range r.Exprs {
		if m, ok := e.(*expr.Match); ok && m.Name == "comment" {
			if c, ok := m.Info.(*xt.Comment); ok {
				return string(*c)
			}
		}
	}
	return ""
}

// XTComment is the rule's comment match as iptables-nft stores it, read
// from its encoded expressions without decoding them all (see
// JumpsInto); "" for none, or for expressions that do not parse.
func (r RawRule) XTComment() string {
	if !bytes.Contains(r.Exprs, xtCommentName) {
		return "" // no comment match: nothing to parse
	}
	for _, elem := range attrs(r.Exprs)[unix.NFTA_LIST_ELEM] {
		e := attrs(elem)
		if cstring(first(e[unix.NFTA_EXPR_NAME])) != "match" {
			continue
		}
		m := attrs(first(e[unix.NFTA_EXPR_DATA]))
		if cstring(first(m[unix.NFTA_MATCH_NAME])) == "comment" {
			return cstring(first(m[unix.NFTA_MATCH_INFO]))
		}
	}
	return ""
}

// xtCommentName is the comment match's name as a match expression
// carries it.
var xtCommentName = []byte("comment\x00")

// attrs lists the payloads of the netlink attributes in b by type (flags
// masked); nil when b does not parse.
func attrs(b []byte) map[uint16][][]byte {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil
	}
	out := map[uint16][][]byte{}
	for ad.Next() {
		out[ad.Type()] = append(out[ad.Type()], ad.Bytes())
	}
	if ad.Err() != nil {
		return nil
	}
	return out
}

func first(bs [][]byte) []byte {
	if len(bs) == 0 {
		return nil
	}
	return bs[0]
}

// cstring is b up to its first NUL.
func cstring(b []byte) string {
	s, _, _ := bytes.Cut(b, []byte{0})
	return string(s)
}

// Iface is the interface of a packet that a name match compares.
type Iface uint8

const (
	InIface  Iface = iota // iifname
	OutIface              // oifname
)

// IfnameMatch compares the in or out interface name, NUL-padded to
// IFNAMSIZ as nft does; negate makes it "!=".
func IfnameMatch(i Iface, name string, negate bool) []expr.Any {
	k := expr.MetaKeyIIFNAME
	if i == OutIface {
		k = expr.MetaKeyOIFNAME
	}
	op := expr.CmpOpEq
	if negate {
		op = expr.CmpOpNeq
	}
	data := make([]byte, 16)
	copy(data, name)
	return []expr.Any{&expr.Meta{Key: k, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: data}}
}
