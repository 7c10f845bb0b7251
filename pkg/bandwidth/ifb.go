package bandwidth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
)

// ifbPrefix starts the reference's ifb names.
const ifbPrefix = "bwp"

// ifbName is the reference's name for an attachment's ifb: "bwp" and the
// first 12 hex digits of sha512(network+containerID), so DEL finds it by
// name alone, and a node can switch between the two plugins.
func ifbName(network, containerID string) string {
	sum := sha512.Sum512([]byte(network + containerID))
	return ifbPrefix + hex.EncodeToString(sum[:6])
}

// aliasPrefix starts the alias of the ifbs this plugin makes, which names
// their attachment so that GC removes only its network's ifbs (the name is
// a hash that cannot be read back). The reference sets none.
const aliasPrefix = "cnisuite bandwidth network="

func ifbAlias(network, containerID string) string {
	return aliasPrefix + network + " containerID=" + containerID
}

// macMarker is the first byte of the MACs of the ifbs this plugin makes
// (unicast, locally administered); the next three are the network's tag.
// The MAC is set by the request that creates the ifb, the alias only by a
// second one (the kernel ignores an alias given at creation): an ADD killed
// between the two leaves an ifb without an alias, which GC still knows by
// its MAC. The last two bytes are random, as the kernel's would be.
const macMarker = 0x0a

// macPrefix is what the MACs of network's ifbs start with: macMarker and
// the network's tag, three bytes of the SHA-512 of its name.
func macPrefix(network string) []byte {
	sum := sha512.Sum512([]byte(network))
	return []byte{macMarker, sum[0], sum[1], sum[2]}
}

func ifbMAC(network string) net.HardwareAddr {
	mac := append(net.HardwareAddr(macPrefix(network)), 0, 0)
	_, _ = rand.Read(mac[4:]) // never fails (crypto/rand)
	return mac
}

// ofNetwork tells whether l is an ifb this plugin made for network: its
// alias names network and an attachment whose ifb name is l's (so a
// truncated or forged alias claims nothing), or, with no alias, its MAC
// carries network's tag. The reference's ifbs have neither.
func ofNetwork(l netlink.Link, network string) bool {
	a := l.Attrs()
	if l.Type() != "ifb" {
		return false
	}
	if a.Alias == "" {
		return len(a.HardwareAddr) == 6 && bytes.HasPrefix(a.HardwareAddr, macPrefix(network))
	}
	rest, ours := strings.CutPrefix(a.Alias, aliasPrefix)
	i := strings.LastIndex(rest, " containerID=")
	return ours && i >= 0 && rest[:i] == network && ifbName(network, rest[i+len(" containerID="):]) == a.Name
}

// maxAlias is the longest alias the kernel takes (IFALIASZ - 1).
const maxAlias = 255

// createIFB makes the attachment's ifb, up, with the MTU of the pod's veth
// and no queue length (as the reference), and registers its removal on
// undo. Its MAC is chosen here (ifbMAC), so that the result needs no lookup.
func createIFB(undo *cniplugin.Undo, network, containerID string, mtu int) (*netlink.Ifb, error) {
	ifb := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: ifbName(network, containerID), Flags: net.FlagUp, MTU: mtu, TxQLen: 0, HardwareAddr: ifbMAC(network)}}
	if err := netlink.LinkAdd(ifb); err != nil {
		return nil, fmt.Errorf("creating ifb %s: %w (an earlier ADD of this container on network %q was not DELeted: DEL it first)", ifb.Name, err, network)
	}
	undo.Push("delete ifb "+ifb.Name, func() error { return netlink.LinkDel(ifb) })
	alias := ifbAlias(network, containerID)
	if len(alias) > maxAlias {
		return ifb, nil // GC knows it by its MAC alone (ofNetwork)
	}
	if err := netlink.LinkSetAlias(ifb, alias); err != nil {
		return nil, fmt.Errorf("naming the attachment in the alias of ifb %s: %w", ifb.Name, err)
	}
	return ifb, nil
}
