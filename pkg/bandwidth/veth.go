package bandwidth

import (
	"fmt"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// hostVeth finds the node side of the pod's veth, as the reference does:
// the peer of ifName in the pod's namespace, which the prevResult must list
// as a node-side interface. The peer's own peer must be ifName, so that an
// unrelated link of the node holding the same index is never taken.
func hostVeth(netnsPath, ifName string, prev *current.Result) (netlink.Link, error) {
	var podIndex, peerIndex int
	err := netns.Do(netnsPath, func() error {
		l, err := netlink.LinkByName(ifName)
		if link.IsNotFound(err) {
			return netconf.Invalid("the pod has no interface %q: chain bandwidth after the plugin that makes it, with the same CNI_IFNAME", ifName)
		}
		if err != nil {
			return fmt.Errorf("looking up %q in the pod's namespace: %w", ifName, err)
		}
		if _, ok := l.(*netlink.Veth); !ok {
			return netconf.Invalid("%q in the pod is a %s, not a veth: chain bandwidth after a plugin that makes a veth pair (bridge, ptp, flannel)", ifName, l.Type())
		}
		podIndex, peerIndex = l.Attrs().Index, l.Attrs().ParentIndex
		return nil
	})
	if err != nil {
		return nil, netns.CNIError(err, netnsPath)
	}
	host, err := netlink.LinkByIndex(peerIndex)
	if err != nil && !link.IsNotFound(err) {
		return nil, fmt.Errorf("looking up link %d, the peer of %q: %w", peerIndex, ifName, err)
	}
	if err != nil || host.Type() != "veth" || host.Attrs().ParentIndex != podIndex {
		return nil, netconf.Invalid("the peer of %q (index %d) is not a veth in this namespace: run bandwidth in the namespace of the pod's veth peer, chained after the plugin that made it", ifName, peerIndex)
	}
	name := host.Attrs().Name
	if !slices.ContainsFunc(prev.Interfaces, func(i *current.Interface) bool { return i.Sandbox == "" && i.Name == name }) {
		return nil, netconf.Invalid("prevResult lists no node-side interface %q, the peer of %q; pass the result of the plugin that made the veth", name, ifName)
	}
	return host, nil
}
