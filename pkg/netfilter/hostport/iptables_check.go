package hostport

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/cnisuite/cni/pkg/netfilter/iptables"
)

// lacking returns the rules of want ("<chain> <spec>") that t does not
// hold by specKey: one pass over t's rules of those chains to index them,
// one lookup per wanted rule.
func lacking(t *iptables.Table, want [][2]string) [][2]string {
	chains := map[string]bool{}
	for _, w := range want {
		chains[w[0]] = true
	}
	have := map[string]bool{}
	for _, r := range t.Rules {
		if chains[r.Chain] {
			have[r.Chain+" "+specKey(r.Spec)] = true
		}
	}
	var out [][2]string
	for _, w := range want {
		if !have[w[0]+" "+specKey(w[1])] {
			out = append(out, w)
		}
	}
	return out
}

// longOptions are the spellings iptables-save prints shorter.
var longOptions = map[string]string{
	"--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d",
	"--in-interface": "-i", "--out-interface": "-o", "--protocol": "-p",
	"--match": "-m", "--jump": "-j", "--goto": "-g",
	"--destination-port": "--dport", "--source-port": "--sport",
	"--destination-ports": "--dports", "--source-ports": "--sports",
}

// specKey is a rule specification in a form that does not depend on how it
// was spelt. iptables-save prints the address, interface and protocol
// matches first, names the protocol's implicit match ("-p tcp --dport 80"
// comes back as "-p tcp -m tcp --dport 80"), masks an address and gives it
// its prefix length, and prints short option names. The key is the sorted
// list of the rule's clauses (an option with its values and the "!" before
// it) with those differences removed, so that the rule as written and as
// saved meet. Sorting forgets which match an option followed, which no two
// rules of an attachment differ by.
func specKey(spec string) string {
	toks := iptables.Tokenize(spec)
	var clauses []string
	proto := ""
	for i := 0; i < len(toks); {
		clause := []string{}
		if toks[i] == "!" {
			clause = append(clause, "!")
			i++
		}
		if i == len(toks) {
			break
		}
		opt := toks[i]
		if short, ok := longOptions[opt]; ok {
			opt = short
		}
		clause = append(clause, opt)
		for i++; i < len(toks) && toks[i] != "!" && !strings.HasPrefix(toks[i], "-"); i++ {
			v := toks[i]
			switch opt {
			case "-s", "-d":
				v = maskedPrefix(v)
			case "-p":
				v = strings.ToLower(v)
				proto = v
			}
			clause = append(clause, v)
		}
		clauses = append(clauses, strings.Join(clause, "\x00"))
	}
	if proto != "" {
		clauses = slices.DeleteFunc(clauses, func(c string) bool { return c == "-m\x00"+proto })
	}
	slices.Sort(clauses)
	return strings.Join(clauses, "\x01")
}

// maskedPrefix prints an address or prefix as iptables-save does; anything
// else (a host name, a list) is left as it is.
func maskedPrefix(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return s
}
