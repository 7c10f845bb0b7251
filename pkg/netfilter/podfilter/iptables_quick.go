package podfilter

import (
	"slices"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// nftQuickSweep is the QuickSweep of iptables-nft: one stable read of
// CNI-FORWARD over netlink, its rules' comments read without decoding
// them, and one nft transaction deleting the chosen rules by handle; a
// family without the chain costs one dump. It leaves the family to
// iptables where the legacy x_tables filter table is in use (netlink does
// not see its rules), and, with refs, where the chain holds untagged rules
// (the reference's, which iptables finds by their text).
func nftQuickSweep(f family.Family, pick func(string) bool, refs bool) bool {
	return nftconn.XTDelete(f, "filter", func(conn *nftconn.Conn, table *nftables.Table) (*nftables.Chain, []*nftables.Rule, bool, error) {
		names, err := conn.DumpChains(table)
		if err != nil || !slices.Contains(names, forwardChain) {
			return nil, nil, true, err
		}
		raw, err := conn.DumpRules(table, forwardChain)
		if err != nil {
			return nil, nil, false, err
		}
		var gone []*nftables.Rule
		for _, r := range raw {
			switch c := r.XTComment(); {
			case pick(c):
				gone = append(gone, r.Rule(table))
			case refs && c == "":
				return nil, nil, false, nil
			}
		}
		return nil, gone, true, nil
	})
}
