package overlay

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/cnisuite/cni/pkg/family"
)

// Defaults of flannel's vxlan backend.
const (
	DefaultVNI  = 1
	DefaultPort = 8472 // the Linux kernel's historical vxlan port, flannel's default
)

// overhead is the encapsulation's per family: outer Ethernet 14 + IP + UDP
// 8 + VXLAN 8 (+ 8 of slack that flannel keeps), as flannel subtracts from
// the underlay MTU.
var overhead = ByFamily[int]{family.IPv4: 50, family.IPv6: 70}

// minMTU is the least MTU a device of the family works with: IPv6 needs
// 1280 (RFC 8200).
var minMTU = ByFamily[int]{family.IPv4: 68, family.IPv6: 1280}

// checkVXLAN validates the settings of a vxlan network and fills in
// flannel's defaults, VNI 1 on port 8472.
func checkVXLAN(s Settings) (Settings, error) {
	if s.VNI == 0 {
		s.VNI = DefaultVNI
	}
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	switch {
	case s.VNI < 0 || s.VNI > 1<<24-1:
		return s, fmt.Errorf("Backend.VNI %d is out of range; use 1..16777215", s.VNI)
	case s.Port < 0 || s.Port > 65535:
		return s, fmt.Errorf("Backend.Port %d is out of range; use 1..65535", s.Port)
	case s.MTU < 0 || (s.MTU > 0 && s.MTU < 576):
		return s, fmt.Errorf("Backend.MTU %d is too small; use at least 576, or leave it out to derive it from the interface", s.MTU)
	}
	return s, nil
}

// vxlanBackend is the vxlan Backend: a Device per family in use, which
// carries the traffic to every peer of the family.
type vxlanBackend struct {
	s    Settings
	node Node
	macs ByFamily[net.HardwareAddr]
	devs ByFamily[*Device] // as the last successful Ensure of each family left it
}

// macIDs tell the families apart in the identity a VTEP MAC derives from.
var macIDs = ByFamily[string]{family.IPv4: "/ipv4", family.IPv6: "/ipv6"}

func newVXLAN(s Settings, n Node) Backend {
	b := &vxlanBackend{s: s, node: n}
	for f := range b.macs {
		b.macs[f] = MACFromID(n.ID + macIDs[f])
	}
	return b
}

// Ensure makes a device per family of own, the pods' MTU the smallest of
// the devices' and the network's.
func (b *vxlanBackend) Ensure(own ByFamily[netip.Prefix]) (int, error) {
	mtu := podMTU(b.s, b.node)
	var errs []error
	for f, sn := range own {
		if !sn.IsValid() {
			continue
		}
		dev, err := EnsureDevice(DeviceConfig{VNI: b.s.VNI, Port: b.s.Port, Underlay: b.node.Underlay, LocalIP: b.node.Public[f],
			Subnet: sn, MAC: b.macs[f], MTU: b.s.MTU, DirectRouting: b.s.DirectRouting, Log: b.node.Log})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if dev.Created() {
			b.node.Log.Warn("vxlan device created (missing or changed); replaying its peers", "device", dev.Name())
		}
		if b.devs[f] != nil {
			b.devs[f].Close()
		}
		b.devs[f] = dev
		mtu = min(mtu, dev.Config().MTU)
	}
	return mtu, errors.Join(errs...)
}

func (b *vxlanBackend) Reconcile(peers ByFamily[[]Peer]) (Stats, error) {
	return b.program(peers, (*Device).Reconcile)
}

func (b *vxlanBackend) Update(peers ByFamily[[]Peer]) (Stats, error) {
	return b.program(peers, (*Device).Update)
}

// program runs fn on the device of each family, with that family's peers.
func (b *vxlanBackend) program(peers ByFamily[[]Peer], fn func(*Device, []Peer) (Stats, error)) (Stats, error) {
	var total Stats
	var errs []error
	for f, d := range b.devs {
		if d != nil {
			s, err := fn(d, peers[f])
			total = total.plus(s)
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

func (b *vxlanBackend) VtepMAC(f family.Family) net.HardwareAddr { return b.macs[f] }

func (b *vxlanBackend) Devices() []string {
	var names []string
	for _, f := range family.All() {
		names = append(names, DefaultName(b.s.VNI, f))
	}
	return names
}

func (b *vxlanBackend) Teardown() error { return teardown() }

// DeviceConfig describes this node's vxlan device of one address family; the
// family is the one of Subnet.
type DeviceConfig struct {
	VNI      int    // vxlan network identifier, 0 means DefaultVNI as in flannel's config
	Port     int    // UDP port, 0 means DefaultPort
	Name     string // "" means flannel.<VNI> (IPv4) or flannel-v6.<VNI> (IPv6)
	Underlay string // the interface that carries the encapsulated traffic
	// LocalIP is the device's source address; when invalid, the underlay's
	// first global address of the family is used.
	LocalIP netip.Addr
	Subnet  netip.Prefix     // this node's lease subnet
	MAC     net.HardwareAddr // the VTEP MAC, see MACFromID
	// MTU of the device; 0 means the underlay's MTU minus 50 (IPv4) or 70 (IPv6).
	MTU int
	// DirectRouting routes peers whose public IP is on the underlay's link
	// via that IP, without encapsulation, as flannel's DirectRouting does.
	DirectRouting bool
	Log           *slog.Logger // nil means slog.Default()
}

func (c DeviceConfig) family() family.Family { return family.OfPrefix(c.Subnet) }

func (c DeviceConfig) logger() *slog.Logger {
	if c.Log == nil {
		return slog.Default()
	}
	return c.Log
}

// withDefaults validates c and fills in flannel's defaults.
func (c DeviceConfig) withDefaults() (DeviceConfig, error) {
	if c.VNI == 0 {
		c.VNI = DefaultVNI
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Name == "" {
		c.Name = DefaultName(c.VNI, c.family())
	}
	var errs []error
	if c.VNI < 0 || c.VNI >= 1<<24 {
		errs = append(errs, fmt.Errorf("VNI %d is out of range; use 1 to 16777215", c.VNI))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("UDP port %d is out of range; use 1 to 65535 (flannel uses 8472)", c.Port))
	}
	if len(c.Name) > 15 {
		errs = append(errs, fmt.Errorf("device name %q is longer than the kernel's 15 characters", c.Name))
	}
	if c.Underlay == "" {
		errs = append(errs, errors.New("no underlay interface given; name the interface that reaches the other nodes"))
	}
	if !c.Subnet.IsValid() {
		errs = append(errs, errors.New("no subnet given; pass this node's lease subnet"))
	}
	if c.LocalIP.IsValid() && c.Subnet.IsValid() && family.Of(c.LocalIP) != c.family() {
		errs = append(errs, fmt.Errorf("local IP %s and subnet %s are of different families; a device carries one family", c.LocalIP, c.Subnet))
	}
	if err := checkMAC(c.MAC); err != nil {
		errs = append(errs, fmt.Errorf("VTEP MAC: %w", err))
	}
	if c.MTU < 0 {
		errs = append(errs, fmt.Errorf("MTU %d is negative; use 0 for the underlay's MTU minus the overhead", c.MTU))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("vxlan config: %w", err)
	}
	c.Subnet = c.Subnet.Masked()
	return c, nil
}

// deviceNames are flannel's device name formats, by family.
var deviceNames = ByFamily[string]{family.IPv4: "flannel.%d", family.IPv6: "flannel-v6.%d"}

// DefaultName is flannel's device name for a VNI and family.
func DefaultName(vni int, f family.Family) string { return fmt.Sprintf(deviceNames[f], vni) }

// checkMAC accepts an Ethernet unicast address other than all zeros.
func checkMAC(mac net.HardwareAddr) error {
	switch {
	case len(mac) != 6:
		return fmt.Errorf("%q is not a 6-byte Ethernet address", mac)
	case mac[0]&1 != 0:
		return fmt.Errorf("%s is a multicast address", mac)
	case [6]byte(mac) == [6]byte{}:
		return errors.New("00:00:00:00:00:00 is not a usable address")
	}
	return nil
}

// MACFromID derives a VTEP MAC from a stable node identity (machine ID plus
// family, say): the same on every start and after reboots, so the FDB entries
// the peers hold for this node stay valid. The result is unicast and locally
// administered, so it collides with no vendor's address.
func MACFromID(id string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("cnisuite vxlan VTEP MAC\x00" + id))
	mac := net.HardwareAddr(sum[:6:6])
	mac[0] = mac[0]&^0x01 | 0x02 // unicast, locally administered
	return mac
}
