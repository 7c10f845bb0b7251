package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/netns"
)

// namespace is a named network namespace under /run/netns that the bench
// created and deletes.
type namespace struct {
	name string
	path string
}

// namespaces remembers every namespace the bench created, so that all of
// them go away at the end, also after a failure or an interrupt.
type namespaces struct {
	mu   sync.Mutex
	list []*namespace
}

// add creates a namespace with loopback up. It is created with `ip netns
// add` from our own mount namespace: made from inside another namespace, the
// bind mount under /run/netns is not usable from outside.
func (s *namespaces) add(ctx context.Context, name string) (*namespace, error) {
	if err := ip(ctx, "netns", "add", name); err != nil {
		return nil, err
	}
	n := &namespace{name: name, path: "/run/netns/" + name}
	s.mu.Lock()
	s.list = append(s.list, n)
	s.mu.Unlock()
	return n, ip(ctx, "-n", name, "link", "set", "lo", "up")
}

// deleteAll deletes every namespace created so far, and so every link in
// them; it uses its own context because it also runs after an interrupt.
func (s *namespaces) deleteAll() error {
	s.mu.Lock()
	list := s.list
	s.list = nil
	s.mu.Unlock()
	var errs []error
	for _, n := range list {
		errs = append(errs, ip(context.Background(), "netns", "delete", n.name))
	}
	return errors.Join(errs...)
}

// ip runs iproute2 with the given arguments.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// linkNames lists the links of a namespace.
func (n *namespace) linkNames() ([]string, error) {
	var names []string
	err := netns.Do(n.path, func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing the links of %s: %w", n.name, err)
	}
	return names, nil
}

// output runs a command inside the namespace and returns its stdout; a
// command that is not installed yields "" (its rules cannot exist either).
func (n *namespace) output(ctx context.Context, name string, args ...string) (string, error) {
	if _, err := exec.LookPath(name); err != nil {
		return "", nil
	}
	var out []byte
	err := netns.Do(n.path, func() error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stderr = nil
		var err error
		out, err = cmd.Output()
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%s %s in %s: %w", name, strings.Join(args, " "), n.name, err)
	}
	return string(out), nil
}

// checkHost fails early, with what to do, when the bench cannot create
// namespaces or lacks a tool, and returns the path of GNU time.
func checkHost() (string, error) {
	if os.Geteuid() != 0 {
		return "", errors.New("run as root: the bench creates network namespaces (they are deleted at the end)")
	}
	for _, bin := range []string{"ip", "iptables-save", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			return "", fmt.Errorf("%s is not installed: run `make deps` (Debian packages iproute2, iptables) and install Go", bin)
		}
	}
	tool, err := exec.LookPath("time")
	if err != nil {
		return "", errors.New("GNU time is not installed (it measures peak RSS): run `make deps` (Debian package time)")
	}
	return tool, nil
}

// netnsSettler waits for the kernel to finish tearing down the namespaces
// the bench deleted. `ip netns delete` returns at once and a kernel worker
// frees the namespace later, taking the RTNL lock and waiting for RCU grace
// periods as it goes: after a scenario's few hundred namespaces that lasts
// up to seconds, and a scenario measured meanwhile would pay for its
// predecessor's teardown. The sign is the net_namespace slab's count of
// live objects in /proc/slabinfo, which falls back once they are freed.
type netnsSettler struct {
	base int // live namespaces when the bench started; -1: no waiting (off, or no slabinfo)
}

// newNetnsSettler is a settler, one that does not wait when on is false.
func newNetnsSettler(on bool) netnsSettler {
	if !on {
		return netnsSettler{base: -1}
	}
	return netnsSettler{base: liveNetns()}
}

// wait returns once the live namespaces are back to base (give or take a
// few another program made) or have not changed for settleQuiet, or after
// settleMax.
func (s netnsSettler) wait(ctx context.Context) {
	if s.base < 0 {
		return
	}
	start := time.Now()
	last, since := liveNetns(), time.Now()
	for last > s.base+settleSlack && time.Since(since) < settleQuiet && time.Since(start) < settleMax {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if n := liveNetns(); n != last {
			last, since = n, time.Now()
		}
	}
	slog.Info("namespaces torn down", "waited", time.Since(start).Round(time.Millisecond), "live", last, "at start", s.base)
}

const (
	settleSlack = 4
	settleQuiet = 5 * time.Second
	settleMax   = time.Minute
)

// liveNetns is the net_namespace slab's active objects, -1 when the
// kernel does not show it.
func liveNetns() int {
	raw, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(raw)) {
		f := strings.Fields(line)
		if len(f) > 1 && f[0] == "net_namespace" {
			if n, err := strconv.Atoi(f[1]); err == nil {
				return n
			}
		}
	}
	return -1
}
