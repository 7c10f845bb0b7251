package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/cnisuite/cni/pkg/family"
)

// ErrBadKey marks a key under <prefix>/subnets/ that is not a subnet.
var ErrBadKey = errors.New("not a subnet key")

// MaxValueSize bounds the values decoded from the store, a lease or the
// network config: both are a few hundred bytes, and what anyone able to
// write to the store puts there must not cost a node more than this to read.
const MaxValueSize = 1 << 20

// ErrValueTooLarge marks a store value over MaxValueSize.
var ErrValueTooLarge = fmt.Errorf("value over the %d bytes accepted", MaxValueSize)

// Subnets identifies a lease: the node's IPv4 subnet, IPv6 subnet, or both.
type Subnets struct {
	V4 netip.Prefix
	V6 netip.Prefix
}

// Of points at the subnet of family f, for code that serves both families
// in one path.
func (s *Subnets) Of(f family.Family) *netip.Prefix {
	if f == family.IPv6 {
		return &s.V6
	}
	return &s.V4
}

// noV4 is how flannel writes the IPv4 half of an IPv6-only key.
const noV4 = "0.0.0.0-0"

// Key is the lease's name under <prefix>/subnets/, in flannel's spelling:
// "10.244.3.0-24", "10.244.3.0-24&fd00:10:0:3::-64" or "0.0.0.0-0&fd00::-64".
func (s Subnets) Key() string {
	k := noV4
	if s.V4.IsValid() {
		k = s.V4.Addr().String() + "-" + strconv.Itoa(s.V4.Bits())
	}
	if s.V6.IsValid() {
		k += "&" + s.V6.Addr().String() + "-" + strconv.Itoa(s.V6.Bits())
	}
	return k
}

func (s Subnets) String() string {
	switch {
	case s.V4.IsValid() && s.V6.IsValid():
		return s.V4.String() + "," + s.V6.String()
	case s.V6.IsValid():
		return s.V6.String()
	}
	return s.V4.String()
}

// Overlaps reports whether any half of s overlaps the same half of o.
func (s Subnets) Overlaps(o Subnets) bool {
	return (s.V4.IsValid() && o.V4.IsValid() && s.V4.Overlaps(o.V4)) ||
		(s.V6.IsValid() && o.V6.IsValid() && s.V6.Overlaps(o.V6))
}

// ParseKey reads a key written by Subnets.Key (or by flanneld).
func ParseKey(key string) (Subnets, error) {
	v4s, v6s, dual := strings.Cut(key, "&")
	var s Subnets
	var err error
	if v4s != noV4 {
		if s.V4, err = parseKeyPart(v4s, family.IPv4); err != nil {
			return Subnets{}, fmt.Errorf("%w: %q: %w", ErrBadKey, key, err)
		}
	}
	if dual {
		if s.V6, err = parseKeyPart(v6s, family.IPv6); err != nil {
			return Subnets{}, fmt.Errorf("%w: %q: %w", ErrBadKey, key, err)
		}
	}
	if !s.V4.IsValid() && !s.V6.IsValid() {
		return Subnets{}, fmt.Errorf("%w: %q holds no subnet", ErrBadKey, key)
	}
	return s, nil
}

func parseKeyPart(part string, f family.Family) (netip.Prefix, error) {
	addr, bits, ok := strings.Cut(part, "-")
	if !ok {
		return netip.Prefix{}, errors.New("want ADDRESS-PREFIXLEN")
	}
	p, err := netip.ParsePrefix(addr + "/" + bits)
	if err != nil {
		return netip.Prefix{}, err
	}
	if family.OfPrefix(p) != f || p.Addr().Zone() != "" || p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%s is not a network address of the expected family", p)
	}
	return p, nil
}

// Attrs is flannel's lease value (LeaseAttrs) plus NodeID, a field flanneld's
// reader ignores and that lets subnetd find its own lease again after a
// restart, a reboot or a change of address.
type Attrs struct {
	PublicIP      netip.Addr // unspecified (0.0.0.0 on the wire) on IPv6-only nodes
	PublicIPv6    netip.Addr // null on the wire when absent
	BackendType   string
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
	NodeID        string
}

// PublicIPOf points at the public address of family f: PublicIP or
// PublicIPv6.
func (a *Attrs) PublicIPOf(f family.Family) *netip.Addr {
	if f == family.IPv6 {
		return &a.PublicIPv6
	}
	return &a.PublicIP
}

// BackendDataOf points at the backend data of family f: BackendData or
// BackendV6Data.
func (a *Attrs) BackendDataOf(f family.Family) *json.RawMessage {
	if f == family.IPv6 {
		return &a.BackendV6Data
	}
	return &a.BackendData
}

// wireAttrs is the JSON flanneld reads and writes.
type wireAttrs struct {
	PublicIP      string
	PublicIPv6    *string
	BackendType   string          `json:",omitempty"`
	BackendData   json.RawMessage `json:",omitempty"`
	BackendV6Data json.RawMessage `json:",omitempty"`
	NodeID        string          `json:"SubnetdNodeID,omitempty"`
}

// MarshalJSON writes the value as flanneld does: PublicIP always present,
// PublicIPv6 null when the node has none.
func (a Attrs) MarshalJSON() ([]byte, error) {
	w := wireAttrs{PublicIP: "0.0.0.0", BackendType: a.BackendType, BackendData: a.BackendData,
		BackendV6Data: a.BackendV6Data, NodeID: a.NodeID}
	if a.PublicIP.IsValid() {
		w.PublicIP = a.PublicIP.String()
	}
	if a.PublicIPv6.IsValid() {
		s := a.PublicIPv6.String()
		w.PublicIPv6 = &s
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads a value written by subnetd or flanneld; one over
// MaxValueSize is refused undecoded.
func (a *Attrs) UnmarshalJSON(b []byte) error {
	if len(b) > MaxValueSize {
		return fmt.Errorf("lease value of %d bytes: %w (a lease is a few hundred): it was not written by subnetd or flanneld; delete the key", len(b), ErrValueTooLarge)
	}
	var w wireAttrs
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	out := Attrs{BackendType: w.BackendType, BackendData: w.BackendData, BackendV6Data: w.BackendV6Data, NodeID: w.NodeID}
	var err error
	if w.PublicIP != "" {
		if out.PublicIP, err = netip.ParseAddr(w.PublicIP); err != nil || !out.PublicIP.Is4() {
			return fmt.Errorf("PublicIP %q is not an IPv4 address", w.PublicIP)
		}
	}
	if w.PublicIPv6 != nil && *w.PublicIPv6 != "" {
		if out.PublicIPv6, err = netip.ParseAddr(*w.PublicIPv6); err != nil || !out.PublicIPv6.Is6() || out.PublicIPv6.Is4In6() {
			return fmt.Errorf("PublicIPv6 %q is not an IPv6 address", *w.PublicIPv6)
		}
	}
	*a = out
	return nil
}

// VXLANData is the BackendData (and BackendV6Data) of a vxlan lease.
type VXLANData struct {
	VNI     int
	VtepMAC string
}

// Lease is a node's hold on its subnets, as the Manager sees it.
type Lease struct {
	Subnets  Subnets
	Attrs    Attrs
	Rev      int64     // the key's modification revision, for compare-and-swap
	Reserved bool      // a key without a store lease: written by an operator, never expires
	Expiry   time.Time // when the store lease ends unless renewed; zero for reservations
}
