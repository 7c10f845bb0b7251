package link

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/netns"
)

// ErrNameTaken says the container already has an interface of the requested name.
var ErrNameTaken = errors.New("interface name already taken")

// VethOptions describes a veth pair whose host side stays in the current
// namespace under a random name and whose other side goes to Peer.
type VethOptions struct {
	PeerName string           // name inside Peer (CNI_IFNAME)
	Peer     *os.File         // the container's namespace (may be the current one)
	MTU      int              // 0: kernel default
	PeerMAC  net.HardwareAddr // nil: random
}

// nameAttempts bounds retries after a random host name collided.
const nameAttempts = 5

// CreateVeth creates the pair and returns its host side (down).
func CreateVeth(o VethOptions) (netlink.Link, error) {
	for range nameAttempts {
		name, err := RandomVethName()
		if err != nil {
			return nil, err
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = name, o.MTU
		v := &netlink.Veth{LinkAttrs: attrs, PeerName: o.PeerName, PeerHardwareAddr: o.PeerMAC,
			PeerNamespace: netlink.NsFd(int(o.Peer.Fd()))}
		err = netlink.LinkAdd(v)
		if errors.Is(err, syscall.EEXIST) {
			// Either side's name may be the one that exists; only the
			// container's is the caller's problem.
			if taken, terr := peerNameTaken(o); terr != nil || taken {
				return nil, errors.Join(fmt.Errorf("%w: %q exists in the container", ErrNameTaken, o.PeerName), terr)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("creating veth pair %s/%s: %w", name, o.PeerName, err)
		}
		return ByName(name)
	}
	return nil, fmt.Errorf("creating a veth pair: %d random host names were all taken", nameAttempts)
}

func peerNameTaken(o VethOptions) (bool, error) {
	var taken bool
	err := netns.DoFile(o.Peer, func() error {
		_, err := netlink.LinkByName(o.PeerName)
		taken = err == nil
		if IsNotFound(err) {
			return nil
		}
		return err
	})
	return taken, err
}

// RandomVethName returns "veth" and 8 hex digits, as the reference plugins
// name host-side veths (operators grep for it).
func RandomVethName() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a veth name: %w", err)
	}
	return "veth" + hex.EncodeToString(b), nil
}

// PortOptions configures a bridge port.
type PortOptions struct {
	Hairpin  bool
	Isolated bool
}

// AttachToBridge makes l a port of br with the given flags and sets it up.
func AttachToBridge(l netlink.Link, br *netlink.Bridge, o PortOptions) error {
	name := l.Attrs().Name
	if err := netlink.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("attaching %q to bridge %q: %w", name, br.Name, err)
	}
	if err := netlink.LinkSetHairpin(l, o.Hairpin); err != nil {
		return fmt.Errorf("setting hairpin mode on %q: %w", name, err)
	}
	if err := netlink.LinkSetIsolated(l, o.Isolated); err != nil {
		return fmt.Errorf("setting port isolation on %q: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %q up: %w", name, err)
	}
	return nil
}
