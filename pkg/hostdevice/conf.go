package hostdevice

import (
	"net"
	"path/filepath"
	"strings"

	"github.com/cnisuite/cni/pkg/netconf"
)

// NetConf is the host-device plugin's configuration: the reference's keys
// naming the node's device (device, hwaddr, kernelpath, pciBusID) and the
// runtime's runtimeConfig.deviceID (a PCI or auxiliary bus address, as
// device plugins such as SR-IOV's hand out).
type NetConf struct {
	netconf.Base
	Device        string `json:"device"`
	HWAddr        string `json:"hwaddr"`
	KernelPath    string `json:"kernelpath"`
	PCIAddr       string `json:"pciBusID"`
	RuntimeConfig struct {
		DeviceID string `json:"deviceID,omitempty"`
	} `json:"runtimeConfig"`

	hwaddr net.HardwareAddr
}

// loadConf parses stdin and checks the value of every key. That at least
// one key names the device is checked by the verbs that look it up (ADD,
// CHECK): a runtime passes runtimeConfig.deviceID to those, not to STATUS
// or GC, and DEL needs no lookup at all.
func loadConf(stdin []byte, _ string) (*NetConf, error) {
	c := &NetConf{}
	if err := netconf.Load(stdin, c); err != nil {
		return nil, err
	}
	if c.HWAddr != "" {
		mac, err := net.ParseMAC(c.HWAddr)
		if err != nil {
			return nil, netconf.Invalid("\"hwaddr\" %q is not a MAC address; write it as 02:00:00:00:00:01", c.HWAddr)
		}
		c.hwaddr = mac
	}
	switch {
	case !validIfName(c.Device):
		return nil, netconf.Invalid("\"device\" %q is not an interface name (at most 15 characters, no '/', ':' or spaces); name a link of `ip link show` on the node", c.Device)
	case c.KernelPath != "" && (!filepath.IsAbs(c.KernelPath) || !strings.HasPrefix(filepath.Clean(c.KernelPath), "/sys/devices/")):
		return nil, netconf.Invalid("\"kernelpath\" %q must be an absolute path under /sys/devices/, the device's directory (e.g. /sys/devices/pci0000:00/0000:00:03.0)", c.KernelPath)
	case !validBusAddr(c.PCIAddr):
		return nil, netconf.Invalid("\"pciBusID\" %q is not a PCI address; write it as 0000:00:03.0", c.PCIAddr)
	case !validBusAddr(c.RuntimeConfig.DeviceID):
		return nil, netconf.Invalid("runtimeConfig.deviceID %q is not a bus address; the runtime's device plugin must pass a PCI or auxiliary device name", c.RuntimeConfig.DeviceID)
	}
	return c, nil
}

// named says whether a key of the configuration names the device.
func (c *NetConf) named() bool {
	return c.Device != "" || c.HWAddr != "" || c.KernelPath != "" || c.PCIAddr != "" || c.RuntimeConfig.DeviceID != ""
}

// validIfName accepts what the kernel accepts as a link name, and empty.
func validIfName(s string) bool {
	return s == "" || (len(s) <= 15 && s != "." && s != ".." && !strings.ContainsAny(s, "/: \t\n\r\v\f"))
}

// validBusAddr accepts empty and a single sysfs path element: the address
// becomes a directory name under /sys/bus, which it must not leave.
func validBusAddr(s string) bool {
	return s == "" || (s != "." && s != ".." && !strings.ContainsAny(s, "/\x00"))
}
