// Package netnstest holds the privileged test fixtures: namespaces that a test
// creates and that are deleted when it ends, whether it passed or not.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/netns"
)

// SkipUnlessRoot skips tests that need to create namespaces and links.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip)")
	}
}

// NS is a named network namespace under /run/netns.
type NS struct {
	Name string
	Path string
}

// New creates a namespace whose name starts with prefix, with loopback up,
// and deletes it (and so every link inside it) when the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	SkipUnlessRoot(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := prefix + "-" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", name)
	ns := &NS{Name: name, Path: "/run/netns/" + name}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	// From this process: a run of ip in the namespace costs a process and a
	// mount namespace, and tests make namespaces by the thousand.
	ns.Do(t, func() error {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		return err
	})
	return ns
}

// Do runs fn inside the namespace.
func (n *NS) Do(t testing.TB, fn func() error) {
	t.Helper()
	if err := netns.Do(n.Path, fn); err != nil {
		t.Fatalf("in %s: %v", n.Name, err)
	}
}

// Run runs a command inside the namespace and fails the test if it fails.
func (n *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}

// Try runs a command inside the namespace and returns its output and error.
func (n *NS) Try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Links names the links that `ip -o link show args...` lists in the
// namespace. Without args, or with "type KIND", it reads them through
// netlink from this process: a run of ip costs a process and a mount
// namespace of its own (~15 ms), and tests list links thousands of times.
func (n *NS) Links(t testing.TB, args ...string) []string {
	t.Helper()
	names, err := n.TryLinks(args...)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TryLinks is Links for a goroutine other than the test's: it returns
// the error instead of failing the test.
func (n *NS) TryLinks(args ...string) ([]string, error) {
	if len(args) != 0 && (len(args) != 2 || args[0] != "type") {
		out, err := n.Try(append([]string{"ip", "-o", "link", "show"}, args...)...)
		if err != nil {
			return nil, fmt.Errorf("ip link show %s in %s: %w: %s", strings.Join(args, " "), n.Name, err, out)
		}
		return LinkNames(out), nil
	}
	var links []netlink.Link
	err := netns.Do(n.Path, func() (err error) {
		// A dump that raced with a change of the table is retried, as
		// pkg/link's RetryDump does (which fixtures may not import: they
		// serve packages, pkg/dhcp's, that must not depend on pkg/link).
		for range 5 {
			if links, err = netlink.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing the links of %s: %w", n.Name, err)
	}
	var names []string
	for _, l := range links {
		if len(args) == 0 || ipKind(l) == args[1] {
			names = append(names, l.Attrs().Name)
		}
	}
	return names, nil
}

// ipKind is the kind ip names the link's type by: netlink calls a tun or
// tap device "tuntap".
func ipKind(l netlink.Link) string {
	if l.Type() == "tuntap" {
		return "tun"
	}
	return l.Type()
}

// LinkNames reads the link names of `ip -o link` output. Only "<index>:
// <name>[@peer]: <FLAGS> ..." lines count: ip also prints notes such as
// "Peer netns reference is invalid." while a namespace elsewhere goes away,
// and one can land inside a line of the listing ("3: Peer netns ...").
func LinkNames(out string) []string {
	var names []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) > 2 && strings.HasSuffix(f[0], ":") && strings.HasPrefix(f[2], "<") {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			names = append(names, name)
		}
	}
	return names
}
