package link

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
)

// macvlanModes are the modes the reference macvlan plugin accepts, by the
// names its configuration uses. The kernel's "source" mode is not one.
var macvlanModes = map[string]netlink.MacvlanMode{
	"bridge":   netlink.MACVLAN_MODE_BRIDGE,
	"private":  netlink.MACVLAN_MODE_PRIVATE,
	"vepa":     netlink.MACVLAN_MODE_VEPA,
	"passthru": netlink.MACVLAN_MODE_PASSTHRU,
}

// ParseMacvlanMode returns the kernel mode of a configuration's "mode";
// empty means bridge, the reference's default.
func ParseMacvlanMode(s string) (netlink.MacvlanMode, bool) {
	if s == "" {
		return netlink.MACVLAN_MODE_BRIDGE, true
	}
	m, ok := macvlanModes[s]
	return m, ok
}

// MacvlanModeName is the configuration's name of a kernel mode.
func MacvlanModeName(m netlink.MacvlanMode) string {
	for name, mode := range macvlanModes {
		if mode == m {
			return name
		}
	}
	return fmt.Sprintf("mode %d", m)
}

// Reasons the kernel refuses a macvlan, told apart so that plugins can
// give each its CNI code and its fix.
var (
	ErrNotEthernet  = errors.New("is not an Ethernet device")
	ErrMTUTooLarge  = errors.New("MTU larger than the master's")
	ErrPassthruBusy = errors.New("passthru slot taken")
	ErrMasterInUse  = errors.New("used by another driver")
)

// MacvlanOptions describes a macvlan link on Master, a link of the current
// namespace, created in Netns (the current namespace when nil).
type MacvlanOptions struct {
	Name       string
	Master     netlink.Link
	Mode       netlink.MacvlanMode
	MTU        int              // 0: the master's
	MAC        net.HardwareAddr // nil: random (passthru always takes the master's)
	BCQueueLen uint32           // 0: the kernel's default
	Netns      *os.File
}

// CreateMacvlan creates the link, down, directly in its namespace: there
// is no moment when it sits in the master's namespace under a name that
// could collide there, and nothing to move back on failure.
func CreateMacvlan(o MacvlanOptions) error {
	m := o.Master.Attrs()
	if m.EncapType != "ether" || m.Flags&net.FlagLoopback != 0 {
		return fmt.Errorf("master %q (%s) %w; name the node's uplink or another Ethernet interface", m.Name, m.EncapType, ErrNotEthernet)
	}
	if o.MTU > m.MTU {
		return fmt.Errorf("%w: MTU %d is larger than the MTU %d of master %q; lower \"mtu\" or leave it out to inherit the master's",
			ErrMTUTooLarge, o.MTU, m.MTU, m.Name)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU, attrs.HardwareAddr, attrs.ParentIndex = o.Name, o.MTU, o.MAC, m.Index
	if o.Netns != nil {
		attrs.Namespace = netlink.NsFd(int(o.Netns.Fd()))
	}
	err := netlink.LinkAdd(&netlink.Macvlan{LinkAttrs: attrs, Mode: o.Mode, BCQueueLen: o.BCQueueLen})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EEXIST):
		return fmt.Errorf("%w: %q exists in the container", ErrNameTaken, o.Name)
	case errors.Is(err, syscall.EINVAL) && o.Mode == netlink.MACVLAN_MODE_PASSTHRU:
		// The other causes of EINVAL (MTU, device type) are ruled out above.
		return fmt.Errorf("%w: master %q already carries a macvlan and passthru mode needs it alone; delete the other macvlan or use another mode: %w",
			ErrPassthruBusy, m.Name, err)
	case errors.Is(err, syscall.EINVAL):
		return fmt.Errorf("%w: master %q is held by a passthru macvlan, which admits no other; delete that one or use another master: %w",
			ErrPassthruBusy, m.Name, err)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("master %q is %w (a bridge port, bond slave or ipvlan master); use the bridge or bond itself as master: %w",
			m.Name, ErrMasterInUse, err)
	}
	return fmt.Errorf("creating macvlan %q on %q: %w", o.Name, m.Name, err)
}

// MacvlanWant is what a macvlan link found by CHECK must be.
type MacvlanWant struct {
	Mode        netlink.MacvlanMode
	MasterIndex int // the master's ifindex in its own namespace
	// MasterNsID is the id under which the link's namespace knows the
	// master's namespace (netlink.GetNetNsIdByFd), or -1 when both are the
	// same namespace. An ifindex alone names no link across namespaces.
	MasterNsID int
}

// VerifyMacvlan checks that l is a macvlan of the wanted mode on the
// wanted master.
func VerifyMacvlan(l netlink.Link, w MacvlanWant) error {
	name := l.Attrs().Name
	mv, ok := l.(*netlink.Macvlan)
	if !ok {
		return fmt.Errorf("container interface %q is a %s, not a macvlan", name, l.Type())
	}
	if mv.Mode != w.Mode {
		return fmt.Errorf("container interface %q is a %s macvlan, the configuration says %s",
			name, MacvlanModeName(mv.Mode), MacvlanModeName(w.Mode))
	}
	if mv.ParentIndex != w.MasterIndex || mv.NetNsID != w.MasterNsID {
		return fmt.Errorf("container interface %q sits on link %d of namespace id %d, not on the master (link %d of namespace id %d); it was replaced or the master was recreated",
			name, mv.ParentIndex, mv.NetNsID, w.MasterIndex, w.MasterNsID)
	}
	return nil
}

// ErrNoDefaultRoute says there is no default route to take a master from.
var ErrNoDefaultRoute = errors.New("no default route")

// DefaultRouteLink returns the link of the main table's default route,
// IPv4 before IPv6 as the kernel dumps them; for a multipath route, the
// link of its first next hop.
func DefaultRouteLink() (netlink.Link, error) {
	index, err := RetryDump(defaultRouteIndex)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	if index == 0 {
		return nil, ErrNoDefaultRoute
	}
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return nil, fmt.Errorf("looking up link %d of the default route: %w", index, err)
	}
	return l, nil
}

// defaultRouteIndex stops reading at the first default route.
func defaultRouteIndex() (int, error) {
	index := 0
	// An empty filter: the iterator needs one, and keeps to the main table.
	err := netlink.RouteListFilteredIter(netlink.FAMILY_ALL, &netlink.Route{}, 0, func(r netlink.Route) bool {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				return true
			}
		}
		index = r.LinkIndex
		if index == 0 && len(r.MultiPath) > 0 {
			index = r.MultiPath[0].LinkIndex
		}
		return index == 0
	})
	return index, err
}
