package nat

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// Probe tells, for one family, how many rules each named chain of the nat
// table holds (-1: no such chain), without running iptables. ok is false
// when it cannot tell; the caller then reads the table with iptables-save.
type Probe func(v6 bool, chains ...string) (rules []int, ok bool)

// NFTProbe reads iptables-nft's nat table over netlink. That is the whole
// truth only while the legacy x_tables nat table is not in use in the
// namespace (/proc/net/ip*_tables_names), which is when it answers.
func NFTProbe(v6 bool, chains ...string) ([]int, bool) {
	names, fam := "/proc/net/ip_tables_names", nftables.TableFamilyIPv4
	if v6 {
		names, fam = "/proc/net/ip6_tables_names", nftables.TableFamilyIPv6
	}
	b, err := os.ReadFile(names)
	if (err != nil && !errors.Is(err, fs.ErrNotExist)) || slices.Contains(strings.Fields(string(b)), "nat") {
		return nil, false
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, false
	}
	defer conn.CloseLasting()
	all, err := conn.ListChainsOfTableFamily(fam)
	if err != nil {
		return nil, false
	}
	out := make([]int, len(chains))
	for i, name := range chains {
		out[i] = -1
		idx := slices.IndexFunc(all, func(c *nftables.Chain) bool { return c.Table.Name == "nat" && c.Name == name })
		if idx < 0 {
			continue
		}
		rules, err := conn.GetRules(all[idx].Table, all[idx])
		if err != nil {
			return nil, false
		}
		out[i] = len(rules)
	}
	return out, true
}
