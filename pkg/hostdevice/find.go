package hostdevice

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
)

// userspaceDrivers are the drivers that hand a PCI NIC to a userspace
// program (DPDK): the device then has no kernel link to move, and the
// plugin only runs IPAM for it, as the reference does.
var userspaceDrivers = []string{"vfio-pci", "uio_pci_generic", "igb_uio"}

// busAddrs resolves runtimeConfig.deviceID against sysfs (root sys): a PCI
// address replaces "pciBusID", an auxiliary device is returned as aux.
func (c *NetConf) busAddrs(sys string) (pci, aux string, err error) {
	id := c.RuntimeConfig.DeviceID
	switch {
	case id == "":
		return c.PCIAddr, "", nil
	case exists(filepath.Join(sys, "bus/pci/devices", id)):
		return id, "", nil
	case exists(filepath.Join(sys, "bus/auxiliary/devices", id)):
		return "", id, nil
	}
	return "", "", netconf.Invalid("runtimeConfig.deviceID %q is neither a PCI nor an auxiliary device of this node (nothing under %s/bus/pci/devices or %s/bus/auxiliary/devices); check the device plugin that allocated it", id, sys, sys)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// find looks the device up in the calling thread's namespace, by the first
// key set in the reference's order: device, hwaddr, kernelpath, pciBusID
// (or a PCI deviceID), an auxiliary deviceID. It returns a nil link for a
// PCI device bound to a userspace driver (DPDK mode).
func (c *NetConf) find(sys string) (netlink.Link, error) {
	if !c.named() {
		return nil, netconf.Invalid(`no key names the device; set "device", "hwaddr", "kernelpath" or "pciBusID" (or have the runtime pass runtimeConfig.deviceID)`)
	}
	if dpdk, err := c.dpdk(sys); dpdk || err != nil {
		return nil, err
	}
	pci, aux, _ := c.busAddrs(sys) // dpdk resolved them without an error
	switch {
	case c.Device != "":
		l, err := netlink.LinkByName(c.Device)
		if link.IsNotFound(err) {
			return nil, netconf.Invalid("device %q does not exist in the node's namespace; name a link of `ip link show` (a device attached to another pod is in that pod until its DEL)", c.Device)
		}
		return l, err
	case c.hwaddr != nil:
		return byMAC(c.hwaddr)
	case c.KernelPath != "":
		return firstNetdev(filepath.Join(c.KernelPath, "net"), "kernelpath "+c.KernelPath)
	case pci != "":
		return pciNetdev(sys, pci)
	}
	return firstNetdev(filepath.Join(sys, "bus/auxiliary/devices", aux, "net"), "auxiliary device "+aux)
}

func byMAC(mac net.HardwareAddr) (netlink.Link, error) {
	links, err := link.RetryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("listing the node's links: %w", err)
	}
	i := slices.IndexFunc(links, func(l netlink.Link) bool { return bytes.Equal(l.Attrs().HardwareAddr, mac) })
	if i < 0 {
		return nil, netconf.Invalid("no link of the node's namespace has MAC %s (\"hwaddr\"); check `ip link show`", mac)
	}
	return links[i], nil
}

// pciNetdev is the link of a PCI device: under its net directory, or that
// of its virtio function.
func pciNetdev(sys, pci string) (netlink.Link, error) {
	dir := filepath.Join(sys, "bus/pci/devices", pci, "net")
	if !exists(dir) {
		matches, _ := filepath.Glob(filepath.Join(sys, "bus/pci/devices", pci, "virtio*", "net"))
		if len(matches) == 0 {
			return nil, netconf.Invalid("PCI device %s has no network interface (no %s); check \"pciBusID\" against `ls %s/bus/pci/devices`", pci, dir, sys)
		}
		dir = matches[0]
	}
	return firstNetdev(dir, "PCI device "+pci)
}

// firstNetdev is the link of the first entry of a sysfs net directory, as
// the reference takes it.
func firstNetdev(dir, what string) (netlink.Link, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(entries) == 0) {
		return nil, netconf.Invalid("%s has no network interface (nothing in %s); check the key naming the device", what, dir)
	}
	if err != nil {
		return nil, netconf.Errorf(netconf.CodeIO, "reading %s: %w", dir, err)
	}
	l, err := netlink.LinkByName(entries[0].Name())
	if link.IsNotFound(err) {
		return nil, netconf.Invalid("%s names interface %q, which is not in the node's namespace", what, entries[0].Name())
	}
	return l, err
}

// dpdk says whether the device is a PCI one bound to a DPDK driver.
func (c *NetConf) dpdk(sys string) (bool, error) {
	pci, _, err := c.busAddrs(sys)
	if err != nil || pci == "" {
		return false, err
	}
	return userspaceDriver(sys, pci)
}

// userspaceDriver says whether the PCI device is bound to a DPDK driver.
func userspaceDriver(sys, pci string) (bool, error) {
	driver, err := filepath.EvalSymlinks(filepath.Join(sys, "bus/pci/devices", pci, "driver"))
	if err != nil {
		return false, netconf.Invalid("PCI device %s has no driver bound (or does not exist): %w; check \"pciBusID\"", pci, err)
	}
	return slices.Contains(userspaceDrivers, filepath.Base(driver)), nil
}
