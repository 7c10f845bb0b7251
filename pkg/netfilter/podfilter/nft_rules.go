package podfilter

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// The nftables backend is the suite's own (the reference has none): the
// iptables layout, chain for chain, in a table of its own of family inet,
// so that one transaction covers both families. Its base chain FORWARD
// (filter, forward hook, priority filter) is created with the policy
// accept and never changed after: the policy is the admin's to set.
const nftTableName = "cnisuite_firewall"

// NFTTable is the firewall's table; `cnictl reset` removes it whole.
func NFTTable() *nftables.Table {
	return &nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet}
}

func nftChain(name string) *nftables.Chain { return &nftables.Chain{Name: name, Table: NFTTable()} }

// nftBase is the base chain FORWARD, without a policy: creating it gives
// the default, accept, and adding it again leaves the admin's.
func nftBase() *nftables.Chain {
	return &nftables.Chain{Name: "FORWARD", Table: NFTTable(), Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter}
}

// nftRule is one rule the backend writes: its chain, expressions and
// comment.
type nftRule struct {
	chain   string
	exprs   []expr.Any
	comment string
}

func (r nftRule) rule() *nftables.Rule {
	out := &nftables.Rule{Table: NFTTable(), Chain: nftChain(r.chain), Exprs: r.exprs}
	if r.comment != "" {
		out.UserData = nftconn.Comment(r.comment)
	}
	return out
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

// nftPodRules are podRules in nftables: "ip daddr <addr> ct state
// established,related accept" and "ip saddr <addr> accept" (ip6 for an
// IPv6 address), tagged.
func nftPodRules(a netip.Addr, tag string) []nftRule {
	f, h := family.Of(a), host(a)
	accept := []expr.Any{verdict(expr.VerdictAccept)}
	return []nftRule{
		{forwardChain, nftconn.Concat(nftconn.IsFamily(f), nftconn.AddrMatch(nftconn.Daddr, h, false), ctEstablished(), accept), tag},
		{forwardChain, nftconn.Concat(nftconn.IsFamily(f), nftconn.AddrMatch(nftconn.Saddr, h, false), accept), tag},
	}
}

// ctEstablished is "ct state established,related".
func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// nftIsolation is isolationFor in nftables, without the RETURN rules that
// end a chain anyway; the jump to stage 1 is the caller's. An interface
// name does not depend on the family, so the isolation holds for both.
func nftIsolation(iso *Isolation) []nftRule {
	br, pc := iso.Bridge, iso.policyComment()
	in, out := nftconn.IfnameMatch(nftconn.InIface, br, false), nftconn.IfnameMatch(nftconn.OutIface, br, false)
	notOut := nftconn.IfnameMatch(nftconn.OutIface, br, true)
	drop := []expr.Any{verdict(expr.VerdictDrop)}
	rules := []nftRule{
		{stage1Chain, nftconn.Concat(in, notOut, jump(stage2Chain)), pc},
		{stage2Chain, nftconn.Concat(out, drop), isolationComment},
	}
	if iso.Isolated {
		rules = append(rules, nftRule{stage1Chain, nftconn.Concat(in, out, drop), pc})
	}
	return rules
}
