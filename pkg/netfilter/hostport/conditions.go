package hostport

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/expr"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// errConditionSyntax lists what ParseConditions understands.
var errConditionSyntax = errors.New(`the nftables backend understands "ip saddr|daddr [!=] <address or prefix>" (ip6 for conditionsV6) and "iifname|oifname [!=] <name>"`)

// ParseConditions turns the nftables conditions of the configuration for
// family f (conditionsV4 or conditionsV6; the elements are joined with
// spaces, as the reference joins them) into expressions. The plugin talks
// netlink instead of running nft, so it understands the matches people use
// to narrow port mappings, not nft's whole language.
func ParseConditions(conds []string, f family.Family) ([]expr.Any, error) {
	toks := strings.Fields(strings.Join(conds, " "))
	var out []expr.Any
	for len(toks) > 0 {
		var e []expr.Any
		var err error
		e, toks, err = parseMatch(f, toks)
		if err != nil {
			return nil, err
		}
		out = append(out, e...)
	}
	return out, nil
}

// parseMatch reads one match off the front of toks.
func parseMatch(f family.Family, toks []string) ([]expr.Any, []string, error) {
	if toks[0] == "meta" && len(toks) > 1 {
		toks = toks[1:]
	}
	key := toks[0]
	args := toks[1:]
	negate := false
	if len(args) > 0 && (args[0] == "!=" || args[0] == "==") {
		negate, args = args[0] == "!=", args[1:]
	}
	switch key {
	case "ip", "ip6":
		return parseAddrMatch(f, key, toks[1:])
	case "iifname", "oifname":
		if len(args) == 0 {
			return nil, nil, fmt.Errorf("%q needs an interface name: %w", key, errConditionSyntax)
		}
		name := strings.Trim(args[0], `"`)
		if name == "" || len(name) > 15 {
			return nil, nil, fmt.Errorf("%q is not an interface name (1 to 15 characters): %w", args[0], errConditionSyntax)
		}
		return ifnameMatch(key, name, negate), args[1:], nil
	}
	return nil, nil, fmt.Errorf("%q is not understood: %w", strings.Join(toks, " "), errConditionSyntax)
}

func parseAddrMatch(f family.Family, proto string, toks []string) ([]expr.Any, []string, error) {
	if proto != nftconn.FamilyName(nftconn.TableFamily(f)) { // ip or ip6
		return nil, nil, fmt.Errorf("%q matches the other address family: %w", proto, errConditionSyntax)
	}
	if len(toks) < 2 || (toks[0] != "saddr" && toks[0] != "daddr") {
		return nil, nil, fmt.Errorf("%q must be followed by saddr or daddr and an address: %w", proto, errConditionSyntax)
	}
	field := nftconn.Saddr
	if toks[0] == "daddr" {
		field = nftconn.Daddr
	}
	toks = toks[1:]
	negate := false
	if toks[0] == "!=" || toks[0] == "==" {
		negate, toks = toks[0] == "!=", toks[1:]
	}
	if len(toks) == 0 {
		return nil, nil, fmt.Errorf("%q needs an address: %w", proto, errConditionSyntax)
	}
	p, err := parsePrefix(toks[0])
	if err != nil || family.OfPrefix(p) != f {
		return nil, nil, fmt.Errorf("%q is not an %s address or prefix: %w", toks[0], proto, errConditionSyntax)
	}
	return nftconn.AddrMatch(field, p, negate), toks[1:], nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	return netip.PrefixFrom(a, a.BitLen()), err
}

// ifnameMatch is the iifname or oifname match of a condition.
func ifnameMatch(key, name string, negate bool) []expr.Any {
	if key == "oifname" {
		return nftconn.IfnameMatch(nftconn.OutIface, name, negate)
	}
	return nftconn.IfnameMatch(nftconn.InIface, name, negate)
}

// parsedConditions are c's conditions for family f as expressions, or a
// code 2 error saying what the backend understands.
func (c *Conf) parsedConditions(f family.Family) ([]expr.Any, error) {
	conds, err := ParseConditions(c.Conditions[f], f)
	if err != nil {
		return nil, netconf.Errorf(netconf.CodeUnsupportedField, "conditions: %w", err)
	}
	return conds, nil
}
