package link

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// VlanOptions are the VLANs of one bridge port (the bridge filters VLANs).
type VlanOptions struct {
	Access          int   // untagged PVID; 0 for none
	Trunk           []int // tagged VLANs
	PreserveDefault bool  // keep VLAN 1, which the kernel gives every new port
}

// SetPortVlans applies o to the bridge port l. Without any VLAN it does nothing.
func SetPortVlans(l netlink.Link, o VlanOptions) error {
	if o.Access == 0 && len(o.Trunk) == 0 {
		return nil
	}
	name := l.Attrs().Name
	if !o.PreserveDefault {
		if err := clearPortVlans(l); err != nil {
			return fmt.Errorf("removing the default VLAN of %q: %w", name, err)
		}
	}
	pvid := o.Access
	if pvid == 0 {
		pvid = 1 // a trunk keeps untagged traffic on VLAN 1, as the reference does
	}
	if err := netlink.BridgeVlanAdd(l, uint16(pvid), true, true, false, true); err != nil {
		return fmt.Errorf("setting VLAN %d untagged on %q: %w", pvid, name, err)
	}
	for _, v := range o.Trunk {
		if v == pvid {
			continue
		}
		if err := netlink.BridgeVlanAdd(l, uint16(v), false, false, false, true); err != nil {
			return fmt.Errorf("adding tagged VLAN %d to %q: %w", v, name, err)
		}
	}
	return nil
}

func clearPortVlans(l netlink.Link) error {
	all, err := RetryDump(netlink.BridgeVlanList)
	if err != nil {
		return err
	}
	for _, info := range all[int32(l.Attrs().Index)] {
		if err := netlink.BridgeVlanDel(l, info.Vid, false, false, false, true); err != nil {
			return err
		}
	}
	return nil
}
