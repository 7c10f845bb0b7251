// Package vxlan programs the overlay's data plane on a node the way flanneld
// does, so that nodes running either can reach each other's pods: a vxlan
// device "flannel.<VNI>" (or "flannel-v6.<VNI>") carrying the address
// <own subnet>.0/32, and per remote node a route "<subnet> via <subnet>.0 dev
// flannel.1 onlink", a permanent neighbour "<subnet>.0 → VTEP MAC" and an FDB
// entry "VTEP MAC → public IP". The host-gw backend (HostGW) routes each peer
// subnet via the peer's public IP instead.
//
// Peers are reconciled by diff: the kernel's tables are dumped once per
// Reconcile and only the difference is written, adds before deletes, so a
// reconcile with nothing new costs no netlink write at all.
//
// Every function acts on the network namespace of the calling thread, like
// pkg/link; callers switch namespaces with pkg/netns.
package vxlan

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
)

// Defaults of flannel's vxlan backend.
const (
	DefaultVNI  = 1
	DefaultPort = 8472 // the Linux kernel's historical vxlan port, flannel's default
)

// RouteProtocol marks the routes this package adds ("proto 83" in ip route),
// so that reconciles and --cleanup find exactly ours among the routes on a
// shared underlay interface and never touch an operator's.
const RouteProtocol = 83

// Encapsulation overhead: outer Ethernet 14 + IP + UDP 8 + VXLAN 8 (+ 8 of
// slack that flannel keeps), as flannel subtracts from the underlay MTU.
const (
	overheadV4 = 50
	overheadV6 = 70
)

// Peer is one remote node of one address family, as its lease describes it.
type Peer struct {
	Subnet   netip.Prefix     // the node's pod subnet
	PublicIP netip.Addr       // the node's underlay address, the vxlan endpoint
	VtepMAC  net.HardwareAddr // the MAC of the node's vxlan device (unused by host-gw)
}

func (p Peer) String() string {
	return fmt.Sprintf("%s (public IP %s, VTEP MAC %s)", p.Subnet, p.PublicIP, p.VtepMAC)
}

// Config describes this node's vxlan device of one address family; the
// family is the one of Subnet.
type Config struct {
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

func (c Config) v6() bool { return c.Subnet.Addr().Is6() }

func (c Config) logger() *slog.Logger {
	if c.Log == nil {
		return slog.Default()
	}
	return c.Log
}

// withDefaults validates c and fills in flannel's defaults.
func (c Config) withDefaults() (Config, error) {
	if c.VNI == 0 {
		c.VNI = DefaultVNI
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Name == "" {
		c.Name = DefaultName(c.VNI, c.v6())
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
	if c.LocalIP.IsValid() && c.Subnet.IsValid() && c.LocalIP.Is6() != c.v6() {
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

// DefaultName is flannel's device name for a VNI and family.
func DefaultName(vni int, v6 bool) string {
	if v6 {
		return fmt.Sprintf("flannel-v6.%d", vni)
	}
	return fmt.Sprintf("flannel.%d", vni)
}

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
