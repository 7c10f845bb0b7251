// Package masq masquerades what an interface plugin's attachment sends
// outside its subnet (the ipMasq of the bridge and ptp plugins, and the
// backend a configuration picks: backend.go), with two backends of one
// API side by side: IPTables, the reference plugins' chain per attachment in
// the nat table written with iptables-restore (iptables*.go, with a netlink
// fast path for the DEL on iptables-nft), and NFTables, the reference's
// table inet cni_plugins_masquerade over netlink (nft.go). Both keep the
// reference's names and comments, so that a node can switch between the
// reference plugins and the suite and either cleans up the other's rules.
// Under pkg/netfilter it imports iptables and nftconn only; it must not
// import a plugin, the daemon, pkg/subnet or pkg/overlay.
package masq

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"regexp"
	"sync"
)

// Attachment names one CNI attachment, whose addresses are masqueraded.
type Attachment struct {
	Network     string
	ContainerID string
	IfName      string
}

// ChainName is the reference plugins' iptables chain of an attachment:
// "CNI-" and the first 24 hex digits of sha512(network+containerID), 28
// characters.
func ChainName(network, containerID string) string {
	sum := sha512.Sum512([]byte(network + containerID))
	return "CNI-" + hex.EncodeToString(sum[:12])
}

// comment tags every iptables rule of an attachment, in the reference's
// format, so that GC can tell whose a chain is.
func comment(network, containerID string) string {
	return fmt.Sprintf("name: %q id: %q", network, containerID)
}

// chainRE matches the names ChainName gives: "CNI-" and 24 hex digits.
// portmap's CNI-DN- chains do not match ("DN-" is not hex). Compiled on
// first use: at package level every process of a plugin linking this package
// would compile it at start, used or not.
var chainRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^CNI-[0-9a-f]{24}$`) })

// OwnsChain tells whether chain of an iptables table is an attachment's
// masquerade chain, for `cnictl reset`.
func OwnsChain(table, chain string) bool { return table == "nat" && chainRE().MatchString(chain) }
