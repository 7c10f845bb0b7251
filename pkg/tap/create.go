package tap

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// create makes the tap in the container under CNI_IFNAME, registers its
// deletion, then sets its MAC, MTU and bridge.
func create(t *containerif.Attach, c *NetConf) error {
	a := t.Args
	return netns.DoFile(t.Netns, func() error {
		if _, err := netlink.LinkByName(a.IfName); !link.IsNotFound(err) {
			// Even a tap of that name: TUNSETIFF would attach to it, not fail.
			return netconf.Errorf(netconf.CodeInvalidEnv, "container %s already has an interface %q; pass another CNI_IFNAME or remove that interface", a.Netns, a.IfName)
		}
		mk := makeTap
		if c.SelinuxContext != "" {
			mk = makeLabelledTap
		}
		if err := mk(a.IfName, c); err != nil {
			return err
		}
		t.Created("tap")
		return settle(a.IfName, c)
	})
}

// makeTap creates a persistent tap, in the namespace of the calling thread
// (where /dev/net/tun is opened), with the flags `ip tuntap add mode tap`
// gives (no packet information header; multi_queue on request), which is
// what the reference's default path runs. The process that later opens it
// chooses those flags again, but multi_queue must match.
func makeTap(name string, c *NetConf) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/net/tun (is the tun module loaded?): %w", err)
	}
	defer unix.Close(fd)
	req, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if c.MultiQueue {
		flags |= unix.IFF_MULTI_QUEUE
	}
	req.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, req); err != nil {
		return fmt.Errorf("creating tap %q: %w", name, err)
	}
	for _, s := range []struct {
		req uint
		id  *uint32
	}{{unix.TUNSETOWNER, c.Owner}, {unix.TUNSETGROUP, c.Group}} {
		if s.id != nil {
			if err := unix.IoctlSetInt(fd, s.req, int(*s.id)); err != nil {
				return fmt.Errorf("setting the owner or group of tap %q: %w", name, err)
			}
		}
	}
	// Persistent, or the tap goes with this descriptor.
	return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1)
}

// makeLabelledTap creates the tap with `ip tuntap`, run with the SELinux
// context as its exec label: the kernel labels a tap with the context of
// the process that creates it, which this process cannot take itself.
func makeLabelledTap(name string, c *NetConf) error {
	if _, err := os.Stat("/sys/fs/selinux/enforce"); err != nil {
		return netconf.Invalid("\"selinuxContext\" is set but SELinux is not enabled on this node; remove the key")
	}
	if err := setExecLabel(c.SelinuxContext); err != nil {
		return err
	}
	defer setExecLabel("")
	args := []string{"tuntap", "add", "mode", "tap", "name", name}
	if c.MultiQueue {
		args = append(args, "multi_queue")
	}
	if c.Owner != nil {
		args = append(args, "user", strconv.FormatUint(uint64(*c.Owner), 10))
	}
	if c.Group != nil {
		args = append(args, "group", strconv.FormatUint(uint64(*c.Group), 10))
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %v: %w: %s", args, err, out)
	}
	return nil
}

// setExecLabel sets the SELinux context of the programs this thread
// starts; the caller runs locked to its thread (netns.DoFile).
func setExecLabel(label string) error {
	err := os.WriteFile(fmt.Sprintf("/proc/self/task/%d/attr/exec", unix.Gettid()), []byte(label), 0)
	if err != nil {
		return netconf.Invalid("setting the SELinux exec context %q: %w; check \"selinuxContext\"", label, err)
	}
	return nil
}

// settle gives the new tap its MAC, MTU and bridge, each only when asked,
// and brings it up, as the reference does before the addresses: a
// multi-queue tap's link-up (a qdisc per queue, ~1 ms) then runs beside
// IPAM's reservation (see add) instead of after it.
func settle(name string, c *NetConf) error {
	l, err := link.ByName(name)
	if err != nil {
		return err
	}
	if c.mac != nil {
		if err := netlink.LinkSetHardwareAddr(l, c.mac); err != nil {
			return fmt.Errorf("setting MAC %s on %q: %w", c.mac, name, err)
		}
	}
	if c.MTU != 0 {
		if err := netlink.LinkSetMTU(l, c.MTU); err != nil {
			return fmt.Errorf("setting MTU %d on %q: %w", c.MTU, name, err)
		}
	}
	if c.Bridge != "" {
		if err := attachToBridge(l, c.Bridge); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %q up: %w", name, err)
	}
	return nil
}

// attachToBridge makes the tap l a port of the bridge named br, which must
// exist in the container's namespace.
func attachToBridge(l netlink.Link, br string) error {
	b, err := netlink.LinkByName(br)
	if link.IsNotFound(err) {
		return netconf.Invalid("bridge %q does not exist in the container's namespace, where the tap is made; create it first or leave \"bridge\" out", br)
	}
	if err == nil {
		err = netlink.LinkSetMaster(l, b)
	}
	if err != nil {
		return fmt.Errorf("attaching %q to bridge %q: %w", l.Attrs().Name, br, err)
	}
	return nil
}
