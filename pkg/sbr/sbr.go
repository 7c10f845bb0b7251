// Package sbr is the sbr meta plugin (source-based routing): chained after
// the plugin that gives a pod's interface its addresses, it sends what the
// pod sends from each of them through a routing table of that address's
// own, a drop-in replacement for the reference CNI sbr plugin. The sbr
// binary runs it.
//
// It must not import another plugin's package, pkg/netfilter, pkg/overlay
// or pkg/subnet: everything it changes is inside the pod's namespace.
package sbr

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
)

// NetConf is sbr's configuration, key for key the reference's.
type NetConf struct {
	netconf.Base
	// Table, when set, is the operator's table: ADD adds only the rules
	// to it, and DEL removes only those.
	Table *int `json:"table,omitempty"`
}

func loadConf(stdin []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := netconf.Load(stdin, c); err != nil {
		return nil, err
	}
	if c.Table != nil && (*c.Table <= 0 || *c.Table > 1<<32-1 || *c.Table == unix.RT_TABLE_MAIN || *c.Table == unix.RT_TABLE_LOCAL || *c.Table == unix.RT_TABLE_DEFAULT) {
		return nil, netconf.Invalid("\"table\" %d is not a table of its own; use an id from 1 to 2^32-1 other than 253, 254 and 255 (default, main, local), or leave it out for the first free one from 100", *c.Table)
	}
	return c, nil
}

// Plugin is sbr's verbs.
type Plugin struct{}

var _ cniplugin.Plugin = Plugin{}

// Add sets up the source-based routing of CNI_IFNAME's addresses in the
// prevResult and passes the prevResult through. A prevResult without an
// address on the interface (a plugin chained without IPAM) has nothing to
// route: it is passed through unchanged.
func (Plugin) Add(_ context.Context, a *cniplugin.Args) (types.Result, error) {
	c, prev, ips, err := loadPrev(a, chained)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return prev, nil
	}
	err = inPod(a.Netns, func() error { return add(a, c, ips) })
	if err != nil {
		return nil, netns.CNIError(err, a.Netns)
	}
	return prev, nil
}

// loadPrev is the configuration, the prevResult as prevOf reads it (ADD's
// chained or CHECK's rule) and its addresses of CNI_IFNAME.
func loadPrev(a *cniplugin.Args, prevOf func(*NetConf) (*current.Result, error)) (*NetConf, *current.Result, []*current.IPConfig, error) {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return nil, nil, nil, err
	}
	prev, err := prevOf(c)
	if err != nil {
		return nil, nil, nil, err
	}
	return c, prev, ifaceIPs(prev, a.IfName), nil
}

func chained(c *NetConf) (*current.Result, error) {
	return c.ChainedPrevResult("the plugin that gives the interface its addresses (e.g. bridge or ptp)")
}

// ifaceIPs are the prevResult's addresses of ifName: those whose
// interface index names it, or names none (the reference's choice).
func ifaceIPs(prev *current.Result, ifName string) []*current.IPConfig {
	return slices.DeleteFunc(slices.Clone(prev.IPs), func(ipc *current.IPConfig) bool {
		i := ipc.Interface
		return i != nil && *i >= 0 && *i < len(prev.Interfaces) && prev.Interfaces[*i].Name != ifName
	})
}

// inPod runs fn in the pod's namespace, holding a lock on it (flock on
// the namespace file, as the reference locks it) so that two sbr
// invocations of one pod never pick the same table. The namespace is
// never created: a missing one is netns.ErrGone.
func inPod(path string, fn func() error) error {
	f, err := netns.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lock(f); err != nil {
		return err
	}
	return netns.DoFile(f, fn)
}

func lock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return fmt.Errorf("locking network namespace %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

// Del removes the rules from the addresses of CNI_IFNAME (those it holds,
// and the prevResult's when there is one) and the routes of the tables
// ADD chose. With the namespace gone, they went with it: DEL succeeds and
// creates nothing at CNI_NETNS (the reference's lock created a file there
// and its DEL then failed).
func (Plugin) Del(_ context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	var known []netip.Addr
	if prev, err := c.PrevResult(); err == nil && prev != nil {
		for _, ipc := range ifaceIPs(prev, a.IfName) {
			if p, err := link.Prefix(&ipc.Address); err == nil {
				known = append(known, p.Addr())
			}
		}
	}
	if a.Netns == "" {
		return nil
	}
	err = inPod(a.Netns, func() error { return del(a.IfName, c.Table, known) })
	if errors.Is(err, netns.ErrGone) {
		return nil
	}
	return err
}

// Check verifies, in the pod, the rule of each of CNI_IFNAME's addresses
// and, for the tables sbr chose, that the table routes through the
// interface.
func (Plugin) Check(_ context.Context, a *cniplugin.Args) error {
	c, _, ips, err := loadPrev(a, (*NetConf).CheckPrevResult)
	if err != nil {
		return err
	}
	err = netns.Do(a.Netns, func() error { return check(a.IfName, c.Table, ips) })
	return netns.CNIError(err, a.Netns)
}

// GC has nothing to collect: sbr's rules and tables live in pods'
// namespaces, and go with them.
func (Plugin) GC(_ context.Context, a *cniplugin.Args) error {
	_, err := loadConf(a.StdinData)
	return err
}

// Status is ready whenever the configuration is valid.
func (Plugin) Status(_ context.Context, a *cniplugin.Args) error {
	_, err := loadConf(a.StdinData)
	return err
}
