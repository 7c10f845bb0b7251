// Package link creates, reuses and deletes the kernel links of the interface
// plugins (bridges, veth pairs) and sets their sysctls. Every function acts on
// the network namespace of the calling thread; callers switch namespaces with
// pkg/netns. RetryDump, the retry of an interrupted netlink dump, serves
// every package that lists kernel tables (pkg/overlay, the flannel plugin).
// It sits below every plugin and the overlay: of the suite it imports only
// pkg/family and pkg/netns, never a plugin package, pkg/netfilter, pkg/overlay or
// pkg/subnet.
package link

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/family"
)

// Addrs lists the addresses of l of one family (netlink.FAMILY_*).
func Addrs(l netlink.Link, family int) ([]netlink.Addr, error) {
	return RetryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, family) })
}

// IsNotFound reports whether err says a link does not exist.
func IsNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// ByName finds a link; the error says which name was missing.
func ByName(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("looking up link %q: %w", name, err)
	}
	return l, nil
}

// DeleteIfExists deletes the link called name; one that is already gone is
// success, since deleting is how DEL and rollbacks converge. That includes
// a link another process deleted between the lookup and the delete (the
// kernel says ENODEV): a DEL retried by the runtime while the killed one's
// orphaned child was still deleting met it.
func DeleteIfExists(name string) error {
	l, err := netlink.LinkByName(name)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up link %q: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !IsNotFound(err) && !errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("deleting link %q: %w", name, err)
	}
	return nil
}

// sysctlPath is where key lives: under /proc/sys whatever key says.
func sysctlPath(key string) string { return filepath.Join("/proc/sys", filepath.Clean("/"+key)) }

// ReadSysctl returns the value of /proc/sys/<key>, without its trailing
// newline.
func ReadSysctl(key string) (string, error) {
	cur, err := os.ReadFile(sysctlPath(key))
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(cur)), nil
}

// Sysctl writes value to /proc/sys/<key> (key like "net/ipv4/ip_forward"),
// skipping the write when the value is already there: writes of some keys
// (ipv6 forwarding) have side effects even when nothing changes. The key is
// opened once for both: each lookup under /proc/sys/net compares with the
// entries of every namespace on the node (~35 us with 150 namespaces here).
func Sysctl(key, value string) error {
	f, err := os.OpenFile(sysctlPath(key), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrPermission) {
		return sysctlOneWay(key, value) // a read-only key may already hold value
	}
	if err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
	}
	defer f.Close()
	cur, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	if strings.TrimSpace(string(cur)) == value {
		return nil
	}
	// At offset 0: the kernel ignores integer writes made further on.
	if _, err := f.WriteAt([]byte(value), 0); err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// sysctlOneWay is Sysctl for a key that cannot be opened for both reading
// and writing.
func sysctlOneWay(key, value string) error {
	cur, err := ReadSysctl(key)
	if err != nil {
		return err
	}
	if cur == value {
		return nil
	}
	if err := os.WriteFile(sysctlPath(key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// forwarding is each family's routing switch: IPv4 has its own key, IPv6
// the "all" interface's.
var forwarding = [2]string{family.IPv4: "net/ipv4/ip_forward", family.IPv6: "net/ipv6/conf/all/forwarding"}

// EnableForwarding turns on routing for family f in the current namespace.
func EnableForwarding(f family.Family) error { return Sysctl(forwarding[f], "1") }
