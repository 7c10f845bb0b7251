package nft

import (
	"fmt"

	"github.com/cnisuite/cni/pkg/nat"
)

// Reset deletes the portmap tables (ip and ip6 cni_hostport) of the
// current network namespace in one transaction, whatever they hold, and
// returns their names as `nft list tables` prints them; with dryRun it only
// lists them. It is for `cnictl reset`: unlike DEL and GC it also takes the
// rules of pods still running.
func Reset(dryRun bool) ([]string, error) {
	conn, err := nat.DialNFT()
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	defer conn.Close()
	var found []string
	for _, f := range fams {
		st, err := readDecoded(conn, f)
		if err != nil {
			return nil, err
		}
		if !st.exists {
			continue
		}
		found = append(found, "table "+familyName(f)+" "+TableName)
		conn.DelTable(f.table())
	}
	if dryRun || len(found) == 0 {
		return found, nil
	}
	if err := conn.Flush(); err != nil {
		return nil, fmt.Errorf("deleting nftables table %s: %w", TableName, err)
	}
	return found, nil
}
