package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
)

// Device is this node's vxlan device of one family, as EnsureDevice left it.
type Device struct {
	cfg      DeviceConfig // defaults filled in, LocalIP and MTU resolved
	underlay int          // the underlay's link index
	created  bool

	// Kept between Reconcile and Update calls: one netlink socket, opened in
	// the namespace of the first call, and the target and entries the last
	// successful one wrote (model nil: unknown, the next call dumps), with
	// their book when no peer was skipped.
	k     *kernel
	t     target
	model *tables
	book  *book
}

// kernel returns the device's netlink socket, opened at the first call in
// the calling thread's namespace. Close releases it; so does the garbage
// collector for a Device dropped without Close.
func (d *Device) kernel() (*kernel, error) {
	if d.k == nil {
		k, err := openKernel(d.cfg.family())
		if err != nil {
			return nil, err
		}
		d.k = k
		runtime.AddCleanup(d, func(k *kernel) { k.close() }, k)
	}
	return d.k, nil
}

// Close releases the netlink socket of Reconcile and Update; the link and
// its entries stay. A closed Device can be used again.
func (d *Device) Close() {
	if d.k != nil {
		d.k.close()
		d.k, d.model, d.book = nil, nil, nil
	}
}

// Config is the configuration the device was ensured with, defaults and the
// resolved local IP and MTU filled in.
func (d *Device) Config() DeviceConfig { return d.cfg }

// Name is the device's name.
func (d *Device) Name() string { return d.cfg.Name }

// Created reports whether EnsureDevice created the link (it was missing) or
// recreated it (it had wrong attributes): every neighbour, FDB entry and
// route through it is then gone. Reconcile puts them back, since it diffs
// against the kernel.
func (d *Device) Created() bool { return d.created }

// EnsureDevice makes the device match cfg: created when missing, recreated when its
// VNI, port, local address, underlay or learning setting is wrong (the kernel
// cannot change those in place), and MAC, MTU, address and state fixed in
// place. A device that is already right costs a few netlink reads and no
// write, so calling EnsureDevice periodically is cheap.
func EnsureDevice(cfg DeviceConfig) (*Device, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ul, err := link.ByName(cfg.Underlay)
	if err != nil {
		return nil, fmt.Errorf("vxlan underlay: %w", err)
	}
	if cfg, err = resolve(cfg, ul); err != nil {
		return nil, err
	}
	d := &Device{cfg: cfg, underlay: ul.Attrs().Index}
	l, err := d.ensureLink()
	if err != nil {
		return nil, err
	}
	if err := d.ensureAttrs(l); err != nil {
		return nil, err
	}
	return d, nil
}

// resolve fills in the local IP and MTU from the underlay.
func resolve(cfg DeviceConfig, ul netlink.Link) (DeviceConfig, error) {
	if !cfg.LocalIP.IsValid() {
		ip, err := firstGlobal(ul, cfg.family())
		if err != nil {
			return cfg, err
		}
		cfg.LocalIP = ip
	}
	if cfg.MTU == 0 {
		cfg.MTU = ul.Attrs().MTU - overhead[cfg.family()]
	}
	if cfg.MTU < minMTU[cfg.family()] {
		return cfg, fmt.Errorf("vxlan MTU %d is too small for the family (underlay %s has MTU %d); raise the underlay's MTU or set a larger MTU",
			cfg.MTU, cfg.Underlay, ul.Attrs().MTU)
	}
	return cfg, nil
}

func firstGlobal(ul netlink.Link, f family.Family) (netip.Addr, error) {
	addrs, err := link.Addrs(ul, f.Netlink())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listing the addresses of %s: %w", ul.Attrs().Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("underlay %s has no global %s address to use as the vxlan source; add one or pass the public IP",
		ul.Attrs().Name, f)
}

// ensureLink returns the device, created or recreated when needed.
func (d *Device) ensureLink() (netlink.Link, error) {
	l, err := netlink.LinkByName(d.cfg.Name)
	if err != nil && !link.IsNotFound(err) {
		return nil, fmt.Errorf("looking up %s: %w", d.cfg.Name, err)
	}
	if err == nil {
		why := d.mismatch(l)
		if why == "" {
			return l, nil
		}
		d.cfg.logger().Warn("recreating the vxlan device", "device", d.cfg.Name, "reason", why)
		if err := netlink.LinkDel(l); err != nil && !link.IsNotFound(err) {
			return nil, fmt.Errorf("deleting %s to recreate it (%s): %w", d.cfg.Name, why, err)
		}
	}
	return d.create()
}

// mismatch says which attribute that only a new link can change is wrong.
func (d *Device) mismatch(l netlink.Link) string {
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Sprintf("it is a %s link, not vxlan", l.Type())
	}
	local, _ := netip.AddrFromSlice(vx.SrcAddr)
	switch {
	case vx.VxlanId != d.cfg.VNI:
		return fmt.Sprintf("VNI %d, want %d", vx.VxlanId, d.cfg.VNI)
	case vx.Port != d.cfg.Port:
		return fmt.Sprintf("port %d, want %d", vx.Port, d.cfg.Port)
	case local.Unmap() != d.cfg.LocalIP:
		return fmt.Sprintf("local %s, want %s", local.Unmap(), d.cfg.LocalIP)
	case vx.VtepDevIndex != d.underlay:
		return fmt.Sprintf("underlay index %d, want %d (%s)", vx.VtepDevIndex, d.underlay, d.cfg.Underlay)
	case vx.Learning:
		return "learning is on"
	}
	return ""
}

func (d *Device) create() (netlink.Link, error) {
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: d.cfg.Name, MTU: d.cfg.MTU, HardwareAddr: d.cfg.MAC},
		VxlanId:      d.cfg.VNI,
		VtepDevIndex: d.underlay,
		SrcAddr:      net.IP(d.cfg.LocalIP.AsSlice()),
		Port:         d.cfg.Port,
		Learning:     false, // peers come from leases; a learned entry could point anywhere
	}
	if err := netlink.LinkAdd(vx); err != nil {
		return nil, d.createError(err)
	}
	d.created = true
	l, err := netlink.LinkByName(d.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("looking up %s after creating it: %w", d.cfg.Name, err)
	}
	return l, nil
}

// createError names the vxlan device that already holds our VNI and port,
// the collision operators otherwise debug by hand.
func (d *Device) createError(err error) error {
	if !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("creating vxlan device %s: %w", d.cfg.Name, err)
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if vx, ok := l.(*netlink.Vxlan); ok && vx.VxlanId == d.cfg.VNI && vx.Port == d.cfg.Port && l.Attrs().Name != d.cfg.Name {
			return fmt.Errorf("creating vxlan device %s: vxlan device %s already uses VNI %d on UDP port %d; delete it or configure another VNI or port: %w",
				d.cfg.Name, l.Attrs().Name, d.cfg.VNI, d.cfg.Port, err)
		}
	}
	return fmt.Errorf("creating vxlan device %s: %w", d.cfg.Name, err)
}

// ensureAttrs fixes what the kernel can change in place: MAC, MTU, the
// device's single address, its checksum offload and its state.
func (d *Device) ensureAttrs(l netlink.Link) error {
	a := l.Attrs()
	if a.HardwareAddr.String() != d.cfg.MAC.String() {
		if err := netlink.LinkSetHardwareAddr(l, d.cfg.MAC); err != nil {
			return fmt.Errorf("setting the MAC of %s to %s: %w", d.cfg.Name, d.cfg.MAC, err)
		}
	}
	if a.MTU != d.cfg.MTU {
		if err := netlink.LinkSetMTU(l, d.cfg.MTU); err != nil {
			return fmt.Errorf("setting the MTU of %s to %d: %w", d.cfg.Name, d.cfg.MTU, err)
		}
	}
	if err := d.ensureAddr(l); err != nil {
		return err
	}
	if err := d.ensureTxChecksum(); err != nil {
		return err
	}
	if a.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return d.upError(err)
		}
	}
	return nil
}

func (d *Device) upError(err error) error {
	if errors.Is(err, unix.EADDRINUSE) {
		return fmt.Errorf("bringing %s up: UDP port %d is taken by another program; free it or configure another port: %w",
			d.cfg.Name, d.cfg.Port, err)
	}
	return fmt.Errorf("bringing %s up: %w", d.cfg.Name, err)
}

// ensureAddr leaves exactly one global address on the device, the subnet's
// network address as a host prefix, as flannel does; an address of an
// earlier lease is removed. Link-local IPv6 addresses are the kernel's.
func (d *Device) ensureAddr(l netlink.Link) error {
	want := netip.PrefixFrom(d.cfg.Subnet.Addr(), d.cfg.Subnet.Addr().BitLen())
	addrs, err := link.Addrs(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing the addresses of %s: %w", d.cfg.Name, err)
	}
	found := false
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		have := netip.PrefixFrom(ip.Unmap(), ones)
		switch {
		case have == want:
			found = true
		case ip.IsLinkLocalUnicast():
		default:
			if err := netlink.AddrDel(l, &a); err != nil {
				return fmt.Errorf("removing the stale address %s from %s: %w", have, d.cfg.Name, err)
			}
		}
	}
	if found {
		return nil
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), want.Addr().BitLen())}}
	if want.Addr().Is6() {
		addr.Flags = unix.IFA_F_NODAD // nobody else can hold it; usable at once
	}
	if err := netlink.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("adding %s to %s: %w", want, d.cfg.Name, err)
	}
	return nil
}

// TxChecksumBroken reports whether a kernel of this release (uname -r)
// computes the UDP checksum of a vxlan packet wrong when netfilter NAT
// rewrote it (kube-proxy's MASQUERADE --random-fully) and the checksum is
// offloaded: the receiver drops it ("UDP: bad checksum"), connections
// stall for ~63 s. Linux fixed it in 5.7 (commit ea64d8d6c675, "netfilter:
// nat: never update the UDP checksum when it's 0"). A release it cannot
// read is taken as fixed: the offload stays as the kernel set it.
func TxChecksumBroken(release string) bool {
	var major, minor int
	if n, _ := fmt.Sscanf(release, "%d.%d", &major, &minor); n != 2 {
		return false
	}
	return major < 5 || major == 5 && minor < 7
}

// kernelRelease is the running kernel's release; tests replace it.
var kernelRelease = func() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// ensureTxChecksum turns the device's transmit checksum offload off on a
// kernel with the vxlan checksum bug, as Calico does; later kernels keep it,
// which is faster.
func (d *Device) ensureTxChecksum() error {
	if !TxChecksumBroken(kernelRelease()) {
		return nil
	}
	on, err := link.TxChecksum(d.cfg.Name)
	if err == nil && on {
		err = link.SetTxChecksum(d.cfg.Name, false)
	}
	if err != nil {
		return fmt.Errorf("turning tx checksum offload of %s off (kernel %s corrupts vxlan checksums after NAT with it): %w", d.cfg.Name, kernelRelease(), err)
	}
	return nil
}
