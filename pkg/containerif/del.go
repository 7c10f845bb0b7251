package containerif

import (
	"context"
	"errors"
	"fmt"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netns"
)

// ipamIndependent says whether an IPAM plugin may run while the container's
// interface is created or deleted: host-local and static only read their
// configuration and their store, while the others (dhcp) work through the
// interface, which must exist for as long as they run: made before their
// ADD, deleted after their DEL (dhcp sends its DHCPRELEASE through it).
func ipamIndependent(ipamType string) bool {
	return ipamType == "host-local" || ipamType == "static"
}

// Teardown is what an interface plugin's DEL does besides releasing IPAM.
type Teardown struct {
	// Unlink removes the container's side of the attachment; unset,
	// CNI_IFNAME is deleted in CNI_NETNS. A plugin that lends a device
	// (host-device) gives it back instead.
	Unlink func() error
	// Also are the plugin's steps on the node (rules): each runs at the
	// same time as the rest.
	Also []func() error
}

// run is DEL once the configuration is loaded (Del).
func (d Teardown) run(ctx context.Context, a *cniplugin.Args, ipamType string) error {
	unlink := d.Unlink
	if unlink == nil {
		unlink = func() error { return deleteLink(a) }
	}
	release := func() error {
		_, err := a.IPAM(ctx, "DEL", ipamType)
		return err
	}
	steps := []func() error{unlink, release}
	if ipamType != "" && !ipamIndependent(ipamType) {
		steps = []func() error{func() error {
			if err := release(); err != nil {
				return err
			}
			return unlink()
		}}
	}
	// Each step on a goroutine of its own, in this thread's namespace.
	return netns.Concurrently(append(steps, d.Also...)...)
}

// deleteLink deletes CNI_IFNAME in CNI_NETNS. Without CNI_NETNS, or with
// the namespace or the link gone, there is nothing to delete.
func deleteLink(a *cniplugin.Args) error {
	if a.Netns == "" {
		return nil
	}
	err := netns.Do(a.Netns, func() error { return link.DeleteIfExists(a.IfName) })
	if err != nil && !errors.Is(err, netns.ErrGone) {
		return fmt.Errorf("deleting %q in %s: %w", a.IfName, a.Netns, err)
	}
	return nil
}
