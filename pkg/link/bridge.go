package link

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
)

// BridgeOptions is what an interface plugin asks of its bridge.
type BridgeOptions struct {
	Name          string
	MTU           int  // 0 keeps the kernel's choice (or the existing bridge's)
	Promisc       bool // only ever turned on: other networks may share the bridge
	VlanFiltering bool // only ever turned on, for the same reason
}

// EnsureBridge creates the bridge if it is missing and otherwise reuses it,
// bringing MTU and flags to what o asks. It returns the bridge, up. An
// existing bridge costs one lookup when it is already as o asks, as it is
// for every ADD but a node's first.
func EnsureBridge(o BridgeOptions) (*netlink.Bridge, error) {
	br, err := BridgeByName(o.Name)
	created := false
	if IsNotFound(err) {
		created, err = createBridge(o)
		if err == nil {
			br, err = BridgeByName(o.Name)
		}
	}
	if err != nil {
		return nil, err
	}
	if created {
		// Pin the MAC: otherwise a bridge takes the lowest MAC of its ports
		// and changes it as pods come and go, breaking neighbours' caches.
		if err := netlink.LinkSetHardwareAddr(br, br.HardwareAddr); err != nil {
			return nil, fmt.Errorf("pinning the MAC address of bridge %q: %w", o.Name, err)
		}
	}
	changed, err := reconcileBridge(br, o)
	if err != nil {
		return nil, err
	}
	// The bridge's routes are ours; router advertisements must not add others.
	// And no duplicate address detection on it: while its link-local address
	// is tentative (~1.5 s after the first port comes up) the node cannot
	// solicit pods' neighbours, so IPv6 forwarded to a new pod is dropped.
	// The bridge's addresses are the node's own on a segment only it routes.
	for _, key := range []string{"accept_ra", "accept_dad"} {
		if err := Sysctl("net/ipv6/conf/"+o.Name+"/"+key, "0"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if !created && !changed && br.Flags&net.FlagUp != 0 {
		return br, nil
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("setting bridge %q up: %w", o.Name, err)
	}
	return BridgeByName(o.Name)
}

// createBridge creates the bridge o describes; false when another process
// did first.
func createBridge(o BridgeOptions) (bool, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = o.Name, o.MTU
	want := &netlink.Bridge{LinkAttrs: attrs}
	if o.VlanFiltering {
		want.VlanFiltering = &o.VlanFiltering
	}
	err := netlink.LinkAdd(want)
	switch {
	case errors.Is(err, syscall.EEXIST):
		return false, nil
	case errors.Is(err, syscall.EOPNOTSUPP) && o.VlanFiltering:
		return false, fmt.Errorf("creating bridge %q with VLAN filtering: the kernel lacks bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING): %w", o.Name, err)
	case err != nil:
		return false, fmt.Errorf("creating bridge %q: %w", o.Name, err)
	}
	return true, nil
}

// reconcileBridge applies o to a bridge that may predate this network;
// false when it already was as o asks.
func reconcileBridge(br *netlink.Bridge, o BridgeOptions) (bool, error) {
	changed := false
	if o.MTU != 0 && br.MTU != o.MTU {
		if err := netlink.LinkSetMTU(br, o.MTU); err != nil {
			return false, fmt.Errorf("setting MTU %d on bridge %q: %w", o.MTU, o.Name, err)
		}
		changed = true
	}
	if o.Promisc && br.Promisc == 0 {
		if err := netlink.SetPromiscOn(br); err != nil {
			return false, fmt.Errorf("setting promiscuous mode on bridge %q: %w", o.Name, err)
		}
		changed = true
	}
	if o.VlanFiltering && (br.VlanFiltering == nil || !*br.VlanFiltering) {
		if err := netlink.BridgeSetVlanFiltering(br, true); err != nil {
			return false, fmt.Errorf("enabling VLAN filtering on bridge %q: %w", o.Name, err)
		}
		changed = true
	}
	return changed, nil
}

// ErrNotBridge says a link of the bridge's name exists with another type.
var ErrNotBridge = errors.New("exists but is not a bridge")

// BridgeByName finds an existing bridge.
func BridgeByName(name string) (*netlink.Bridge, error) {
	l, err := ByName(name)
	if err != nil {
		return nil, err
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("link %q (type %s) %w; rename the bridge in the configuration or delete that link", name, l.Type(), ErrNotBridge)
	}
	return br, nil
}
