package nft

import (
	"fmt"
	"slices"

	"github.com/google/nftables"

	"github.com/cnisuite/cni/pkg/nat"
)

// suiteTables are the tables the suite's nftables backends make (and the
// reference plugins and flanneld, whose names they share).
func suiteTables() []*nftables.Table {
	var out []*nftables.Table
	for _, f := range fams {
		out = append(out, f.table(), f.flannelTable())
	}
	return append(out, MasqTable())
}

// Reset deletes the suite's tables of the current network namespace in one
// transaction, whatever they hold, and returns them as `nft list tables`
// prints them; with dryRun it only lists them. It is for `cnictl reset`:
// unlike DEL and GC it also takes the rules of pods still running, and
// unlike subnetd --cleanup it takes every table whatever made it.
func Reset(dryRun bool) ([]string, error) {
	conn, err := nat.DialNFT()
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	defer conn.Close()
	tables, err := conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	var found []string
	for _, t := range suiteTables() {
		if slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name && x.Family == t.Family }) {
			found = append(found, "table "+tableFamilyName(t.Family)+" "+t.Name)
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

// tableFamilyName is a family as nft names it.
func tableFamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return "ip"
}
