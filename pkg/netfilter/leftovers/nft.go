package leftovers

import (
	"fmt"
	"slices"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/hostport"
	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
	"github.com/cnisuite/cni/pkg/netfilter/masq"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
	"github.com/cnisuite/cni/pkg/netfilter/podfilter"
)

// suiteTables are the tables the suite's nftables backends make (and the
// reference plugins and flanneld, whose names they share).
func suiteTables() []*nftables.Table {
	var out []*nftables.Table
	for _, f := range family.All() {
		out = append(out, hostport.NFTTable(f), hostrules.NFTTable(f))
	}
	return append(out, masq.NFTTable(), podfilter.NFTTable())
}

// ResetNFTables deletes the suite's tables of the current network
// namespace in one transaction, whatever they hold, and returns them as
// `nft list tables` prints them; with dryRun it only lists them. Unlike
// subnetd --cleanup it takes every table whatever made it.
func ResetNFTables(dryRun bool) ([]string, error) {
	conn, err := nftconn.Dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	tables, err := conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	var found []string
	for _, t := range suiteTables() {
		if slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name && x.Family == t.Family }) {
			found = append(found, "table "+nftconn.FamilyName(t.Family)+" "+t.Name)
			conn.DelTable(t)
		}
	}
	if dryRun || len(found) == 0 {
		return found, nil
	}
	if err := conn.Flush(); err != nil {
		return nil, fmt.Errorf("deleting nftables tables %v: %w", found, err)
	}
	return found, nil
}
