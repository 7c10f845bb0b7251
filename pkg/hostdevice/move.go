package hostdevice

import (
	"errors"
	"net"
	"os"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/containerif"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// moveLink moves link idx of the calling thread's namespace into target,
// renamed to name, with alias as its alias ("" clears it), in one netlink
// request: the kernel renames the device in target, so the namespace it
// leaves never sees it under another name (the reference moves it through
// a temporary namespace to keep udev from meeting a rename, which costs a
// namespace's creation and deletion and three requests more). The callers
// check first that name is free in target: a taken name fails after the
// move.
func moveLink(idx int, target *os.File, name, alias string) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(idx)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(target.Fd()))))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(alias)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// lend moves the node's device into the container as CNI_IFNAME, its alias
// keeping its node name for DEL (the reference's convention, so either
// plugin gives back what the other lent), and registers its return.
func lend(t *containerif.Attach, dev netlink.Link) error {
	a, name := t.Args, dev.Attrs().Name
	taken := false
	err := netns.DoFile(t.Netns, func() error {
		_, err := netlink.LinkByName(a.IfName)
		taken = err == nil
		if link.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	if taken {
		return netconf.Errorf(netconf.CodeInvalidEnv, "container %s already has an interface %q; pass another CNI_IFNAME or remove that interface", a.Netns, a.IfName)
	}
	if err := moveLink(dev.Attrs().Index, t.Netns, a.IfName, name); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return netconf.Invalid("device %q cannot leave the node's namespace (the kernel keeps loopback, bridges and some virtual links in theirs); name another device: %w", name, err)
		}
		return err
	}
	wasUp := dev.Attrs().Flags&net.FlagUp != 0
	t.Undo.Push("give back "+name, func() error { return restore(t.Netns, a.IfName, name, wasUp) })
	return nil
}

// restore undoes lend: the device back in the node under its name, up
// again if it was (a move between namespaces takes a link down).
func restore(pod *os.File, ifName, name string, wasUp bool) error {
	if err := bringBack(pod, ifName, name); err != nil || !wasUp {
		return err
	}
	l, err := link.ByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

// bringBack moves ifName of the container into the calling thread's
// namespace (the node's) as name, its alias cleared.
func bringBack(pod *os.File, ifName, name string) error {
	node, err := netns.Here()
	if err != nil {
		return err
	}
	defer node.Close()
	return netns.DoFile(pod, func() error {
		l, err := link.ByName(ifName)
		if err != nil {
			return err
		}
		return moveLink(l.Attrs().Index, node, name, "")
	})
}

// giveBack is DEL's return of the device, down, under the name its alias
// keeps, as the reference leaves it. What is not there is not given back,
// and that is success: without CNI_NETNS; with the container's namespace
// gone (the kernel then returned a physical device to the initial
// namespace itself, under its container name, and deleted a virtual one
// such as a veth); with CNI_IFNAME gone (a DEL before this one gave it
// back); with CNI_IFNAME carrying no alias (not a device this plugin lent:
// it goes with the container).
func giveBack(a *cniplugin.Args) error {
	if a.Netns == "" {
		return nil
	}
	pod, err := netns.Open(a.Netns)
	if errors.Is(err, netns.ErrGone) {
		a.Logger().Info("the container's namespace is gone, and with it the device: the kernel returned a physical one to the initial namespace and deleted a virtual one")
		return nil
	}
	if err != nil {
		return err
	}
	defer pod.Close()
	var name string
	err = netns.DoFile(pod, func() error {
		l, err := netlink.LinkByName(a.IfName)
		if link.IsNotFound(err) {
			return nil
		}
		if err == nil && l.Attrs().Alias == "" {
			a.Logger().Warn("the container's interface has no alias naming a node device; left to go with the container")
		}
		if err == nil {
			name = l.Attrs().Alias
		}
		return err
	})
	if err != nil || name == "" {
		return err
	}
	if _, err := netlink.LinkByName(name); err == nil {
		return netconf.Errorf(netconf.CodeTryAgainLater, "the node has another interface named %q, the name the device %q of container %s must get back; rename or remove that interface and DEL again (the device stays in the container meanwhile)", name, a.IfName, a.Netns)
	}
	return bringBack(pod, a.IfName, name)
}
