package tuning

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
)

// attrs are values of an attachment: those ADD sets, or those it found and
// DEL restores. Unset fields are left as they are. The JSON keys up to
// txQLen are the reference's saved file (its configToRestore), key for key.
type attrs struct {
	Mac      string `json:"mac,omitempty"`
	Promisc  *bool  `json:"promisc,omitempty"`
	MTU      int    `json:"mtu,omitempty"`
	Allmulti *bool  `json:"allmulti,omitempty"`
	TxQLen   *int   `json:"txQLen,omitempty"`
	// Sysctl is ours (the reference restores no sysctl, and ignores the
	// key when it reads the file).
	Sysctl []setting `json:"sysctl,omitempty"`
}

// setting is one sysctl by its path under /proc/sys.
type setting struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func (v *attrs) touchesLink() bool {
	return v.Mac != "" || v.Promisc != nil || v.MTU != 0 || v.Allmulti != nil || v.TxQLen != nil
}

func (v *attrs) empty() bool { return !v.touchesLink() && len(v.Sysctl) == 0 }

// diff compares what c asks with the link l (nil when c asks nothing of it)
// and the sysctls' current values: want holds what differs as configured,
// orig the same fields as they are now.
func (c *conf) diff(l netlink.Link, cur []string) (want, orig attrs) {
	if l != nil {
		a := l.Attrs()
		if c.mac != nil && !bytes.Equal(c.mac, a.HardwareAddr) {
			want.Mac, orig.Mac = c.mac.String(), a.HardwareAddr.String()
		}
		// The flags, not IFLA_PROMISCUITY: that counts every user of the
		// mode (a bridge port, tcpdump), the flag is what ADD sets.
		if on := a.RawFlags&unix.IFF_PROMISC != 0; c.promisc && !on {
			want.Promisc, orig.Promisc = &c.promisc, &on
		}
		if c.mtu != 0 && c.mtu != a.MTU {
			want.MTU, orig.MTU = c.mtu, a.MTU
		}
		if on := a.RawFlags&unix.IFF_ALLMULTI != 0; c.allmulti != nil && *c.allmulti != on {
			want.Allmulti, orig.Allmulti = c.allmulti, &on
		}
		if qlen := a.TxQLen; c.txQLen != nil && *c.txQLen != qlen {
			want.TxQLen, orig.TxQLen = c.txQLen, &qlen
		}
	}
	// A sysctl already right is written all the same after a change of the
	// link, which may reset it (a new MTU resets the interface's IPv6 mtu).
	for i, s := range c.sysctls {
		if want.touchesLink() || !sameValue(cur[i], s.value) {
			want.Sysctl = append(want.Sysctl, setting{s.path, s.value})
			orig.Sysctl = append(orig.Sysctl, setting{s.path, cur[i]})
		}
	}
	return want, orig
}

// step sets one value; name and value say which in messages.
type step struct {
	name, value string
	set         func() error
}

// linkSteps sets v's link attributes on l, in the reference's order.
func (v *attrs) linkSteps(l netlink.Link) []step {
	var s []step
	if v.Mac != "" {
		s = append(s, step{"MAC", v.Mac, func() error {
			mac, err := net.ParseMAC(v.Mac)
			if err != nil {
				return err
			}
			return netlink.LinkSetHardwareAddr(l, mac)
		}})
	}
	if v.Promisc != nil {
		s = append(s, step{"promisc", onOff(*v.Promisc), func() error {
			if *v.Promisc {
				return netlink.SetPromiscOn(l)
			}
			return netlink.SetPromiscOff(l)
		}})
	}
	if v.MTU != 0 {
		s = append(s, step{"MTU", strconv.Itoa(v.MTU), func() error { return netlink.LinkSetMTU(l, v.MTU) }})
	}
	if v.Allmulti != nil {
		s = append(s, step{"allmulti", onOff(*v.Allmulti), func() error {
			if *v.Allmulti {
				return netlink.LinkSetAllmulticastOn(l)
			}
			return netlink.LinkSetAllmulticastOff(l)
		}})
	}
	if v.TxQLen != nil {
		s = append(s, step{"txQLen", strconv.Itoa(*v.TxQLen), func() error { return netlink.LinkSetTxQLen(l, *v.TxQLen) }})
	}
	return s
}

// sysctlSteps writes v's sysctls in their order.
func (v *attrs) sysctlSteps() []step {
	s := make([]step, len(v.Sysctl))
	for i, kv := range v.Sysctl {
		s[i] = step{"sysctl " + kv.Key, kv.Value, func() error { return link.Sysctl(kv.Key, kv.Value) }}
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// apply sets v on the link l (nil when v asks nothing of it) and in
// the calling thread's namespace, stopping at the first refusal. The link
// goes first: per-interface sysctls follow it (a new MTU resets the
// interface's IPv6 mtu).
func (v *attrs) apply(l netlink.Link) error {
	for _, s := range append(v.linkSteps(l), v.sysctlSteps()...) {
		if err := s.set(); err != nil {
			return refused(s, err)
		}
	}
	return nil
}

// refused gives a value the kernel would not take (an MTU beyond what the
// driver allows, a sysctl value out of its range) the code of a bad
// configuration.
func refused(s step, err error) error {
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ERANGE) || errors.Is(err, syscall.EADDRNOTAVAIL) {
		return netconf.Invalid("setting %s to %s: the kernel refused the value; use one the interface accepts: %w", s.name, s.value, err)
	}
	return fmt.Errorf("setting %s to %s: %w", s.name, s.value, err)
}

// restore writes v, the values ADD found, back on interface ifName, in the calling thread's
// namespace: the link's attributes first, as ADD, then the sysctls in the
// reverse of ADD's order. What is gone (the interface, its sysctls) has
// nothing to restore; other failures are joined.
func (v *attrs) restore(ifName string) error {
	var steps []step
	if v.touchesLink() {
		l, err := netlink.LinkByName(ifName)
		switch {
		case err == nil:
			steps = v.linkSteps(l)
		case !link.IsNotFound(err):
			return fmt.Errorf("looking up %q to restore it: %w", ifName, err)
		}
	}
	sysctls := v.sysctlSteps()
	slices.Reverse(sysctls)
	var errs []error
	for _, s := range append(steps, sysctls...) {
		if err := s.set(); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("restoring %s to %s: %w", s.name, s.value, err))
		}
	}
	return errors.Join(errs...)
}

// gone says whether err means that what was to be restored no longer exists.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV) || link.IsNotFound(err)
}

// mismatch says how the state differs from the configuration, for CHECK:
// want and orig, from diff, hold the same fields.
func mismatch(ifName string, want, orig *attrs) error {
	if want.empty() {
		return nil
	}
	var l netlink.Link // the steps are only read here, never run
	is := append(orig.linkSteps(l), orig.sysctlSteps()...)
	var diffs []string
	for i, w := range append(want.linkSteps(l), want.sysctlSteps()...) {
		diffs = append(diffs, fmt.Sprintf("%s is %s, the configuration says %s", w.name, is[i].value, w.value))
	}
	return fmt.Errorf("interface %q or its namespace differs from the configuration: %s; set them back, or attach the container again", ifName, strings.Join(diffs, "; "))
}
