package bandwidth

import (
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"log/slog"
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

// ifbOwner reads back the attachment an ifb of ours belongs to; ok is false
// for any other link, an ifb of the reference's included. The name must be
// the one the alias derives, so a truncated or forged alias claims nothing.
func ifbOwner(l netlink.Link) (network, containerID string, ok bool) {
	a := l.Attrs()
	rest, ours := strings.CutPrefix(a.Alias, aliasPrefix)
	i := strings.LastIndex(rest, " containerID=")
	if l.Type() != "ifb" || !ours || i < 0 {
		return "", "", false
	}
	network, containerID = rest[:i], rest[i+len(" containerID="):]
	return network, containerID, ifbName(network, containerID) == a.Name
}

// maxAlias is the longest alias the kernel takes (IFALIASZ - 1).
const maxAlias = 255

// createIFB makes the attachment's ifb, up, with the MTU of the pod's veth
// and no queue length (as the reference), and registers its removal on
// undo. Its MAC is chosen here, as the kernel would (random, unicast,
// locally administered), so that the result needs no lookup.
func createIFB(undo *cniplugin.Undo, log *slog.Logger, network, containerID string, mtu int) (*netlink.Ifb, error) {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac) // never fails (crypto/rand)
	mac[0] = mac[0]&^1 | 2
	ifb := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: ifbName(network, containerID), Flags: net.FlagUp, MTU: mtu, TxQLen: 0, HardwareAddr: mac}}
	if err := netlink.LinkAdd(ifb); err != nil {
		return nil, fmt.Errorf("creating ifb %s: %w (an earlier ADD of this container on network %q was not DELeted: DEL it first)", ifb.Name, err, network)
	}
	undo.Push("delete ifb "+ifb.Name, func() error { return netlink.LinkDel(ifb) })
	alias := ifbAlias(network, containerID)
	if len(alias) > maxAlias {
		log.Warn("network name and container ID too long to name them in the ifb's alias: GC will not remove this ifb, DEL will", "ifb", ifb.Name)
		return ifb, nil
	}
	// The kernel ignores an alias given at creation.
	if err := netlink.LinkSetAlias(ifb, alias); err != nil {
		return nil, fmt.Errorf("naming the attachment in the alias of ifb %s: %w", ifb.Name, err)
	}
	return ifb, nil
}
