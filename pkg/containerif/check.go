package containerif

import (
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
)

// Checking is one CHECK in progress (Check): the invocation, the
// prevResult and the index of this invocation's interface in it.
type Checking struct {
	Args *cniplugin.Args
	Prev *current.Result
	Idx  int
}

// Want is what CHECK expects of the container's interface besides what the
// prevResult says of it.
type Want struct {
	// Kind checks that the link is the plugin's kind (a veth; a macvlan of
	// the configured mode and master).
	Kind func(netlink.Link) error
	MAC  net.HardwareAddr // the configured MAC; nil for any
	MTU  int              // the configured MTU; 0 for any
}

// Link runs inside the container: the link of this invocation's interface
// must be there, of its kind, with the prevResult's MAC, the configured MAC
// and MTU, and the prevResult's addresses and routes. It returns the link
// for the plugin's checks on the node.
func (k *Checking) Link(w Want) (netlink.Link, error) {
	iface := k.Prev.Interfaces[k.Idx]
	l, err := link.ByName(iface.Name)
	if err != nil {
		return nil, err
	}
	if w.Kind != nil {
		if err := w.Kind(l); err != nil {
			return nil, err
		}
	}
	mac := l.Attrs().HardwareAddr.String()
	switch {
	case iface.Mac != "" && iface.Mac != mac:
		return nil, fmt.Errorf("container interface %q has MAC %s, the prevResult says %s", iface.Name, mac, iface.Mac)
	case w.MAC != nil && w.MAC.String() != mac:
		return nil, fmt.Errorf("container interface %q has MAC %s, the configuration asks for %s", iface.Name, mac, w.MAC)
	case w.MTU != 0 && l.Attrs().MTU != w.MTU:
		return nil, fmt.Errorf("container interface %q has MTU %d, the configuration says %d", iface.Name, l.Attrs().MTU, w.MTU)
	}
	return l, link.CheckResult(l, k.Prev, k.Idx)
}

// IsVeth is Want.Kind for the plugins whose container interface is a veth
// (bridge, ptp).
func IsVeth(l netlink.Link) error {
	if _, ok := l.(*netlink.Veth); !ok {
		return fmt.Errorf("container interface %q is a %s, not a veth", l.Attrs().Name, l.Type())
	}
	return nil
}
