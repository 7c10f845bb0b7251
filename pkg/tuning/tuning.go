// Package tuning is the tuning meta plugin: chained after the plugin that
// creates a container's interface, it sets the interface's MAC, MTU,
// promiscuous and all-multicast modes and transmit queue length, and
// sysctls of the pod's network namespace, after saving the values it
// changes (the reference's files, under /run/cni/tuning) so that DEL
// restores them. The tuning binary runs it.
//
// It must not import another plugin's package, pkg/overlay or pkg/subnet.
package tuning

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
	"github.com/cnisuite/cni/pkg/regfile"
)

// Plugin is tuning's verbs.
type Plugin struct {
	// Allowlist is the node's file of allowed sysctl patterns; empty means
	// the reference's, DefaultAllowlist.
	Allowlist string
}

func (p *Plugin) allowlist() string {
	if p.Allowlist == "" {
		return DefaultAllowlist
	}
	return p.Allowlist
}

// Add sets what the configuration asks, once it saved the values it
// changes, and passes the prevResult through with the interface's new MAC.
// A failed ADD restores what it set and removes what it saved.
func (p *Plugin) Add(_ context.Context, a *cniplugin.Args) (types.Result, error) {
	c, err := loadConf(a.StdinData, a.Args, a.IfName)
	if err != nil {
		return nil, err
	}
	prev, err := c.ChainedPrevResult("the plugin that creates the interface (e.g. bridge)")
	if err != nil {
		return nil, err
	}
	if err := checkAllowlist(p.allowlist(), c.sysctls); err != nil {
		return nil, err
	}
	path, err := recordPath(c.DataDir, a.ContainerID, a.IfName)
	if err != nil {
		return nil, err
	}
	if err := netns.Do(a.Netns, func() error { return c.add(a, path) }); err != nil {
		return nil, netns.CNIError(err, a.Netns)
	}
	if c.mac != nil {
		for _, iface := range prev.Interfaces {
			if iface.Name == a.IfName {
				iface.Mac = c.mac.String()
			}
		}
	}
	return prev, nil
}

// add runs in the pod's namespace: everything is read and checked, what
// differs from the configuration saved, and only then set.
func (c *conf) add(a *cniplugin.Args, path string) (retErr error) {
	l, cur, err := c.read(a.IfName, c.touchesLink())
	if err != nil {
		return err
	}
	want, orig := c.diff(l, cur)
	if want.empty() {
		return nil
	}
	if err := writeRecord(path, &record{attrs: orig, Network: c.Name}); err != nil {
		return err
	}
	var undo cniplugin.Undo
	defer undo.OnError(&retErr, a.Logger())
	undo.Push("restore what ADD set", func() error {
		if err := orig.restore(a.IfName); err != nil {
			return err
		}
		return removeRecord(path)
	})
	return want.apply(l)
}

// read finds the interface, when needLink, and reads the sysctls, in the
// calling thread's namespace.
func (c *conf) read(ifName string, needLink bool) (netlink.Link, []string, error) {
	var l netlink.Link
	if needLink {
		var err error
		l, err = netlink.LinkByName(ifName)
		if link.IsNotFound(err) {
			return nil, nil, netconf.Errorf(netconf.CodeInvalidEnv, "the pod's network namespace has no interface %q; chain tuning after the plugin that creates it, with the same CNI_IFNAME", ifName)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("looking up %q: %w", ifName, err)
		}
	}
	cur, err := currentValues(c.sysctls)
	return l, cur, err
}

// Check compares the interface and the sysctls with the configuration.
// Like ADD, it looks at what the configuration sets only: "promisc" false
// is not checked, since ADD never turns the mode off.
func (p *Plugin) Check(_ context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData, a.Args, a.IfName)
	if err != nil {
		return err
	}
	if _, err := c.CheckPrevResult(); err != nil {
		return err
	}
	err = netns.Do(a.Netns, func() error {
		l, cur, err := c.read(a.IfName, true)
		if err != nil {
			return err
		}
		want, orig := c.diff(l, cur)
		return mismatch(a.IfName, &want, &orig)
	})
	return netns.CNIError(err, a.Netns)
}

// Del restores what ADD changed and removes its record; it needs no
// prevResult. No record, no namespace (CNI_NETNS empty or gone) and no
// interface leave nothing to restore: success. A failed restore keeps the
// record, so that the runtime's retry of DEL restores. The temporary files
// of a save killed midway go too: the runtime runs no ADD of the
// attachment while its DEL does.
func (p *Plugin) Del(_ context.Context, a *cniplugin.Args) error {
	n, err := loadBase(a.StdinData)
	if err != nil {
		return err
	}
	path, err := recordPath(n.DataDir, a.ContainerID, a.IfName)
	if err != nil {
		return err
	}
	err = restoreRecord(a, path)
	if terr := regfile.RemoveTemps(path); err == nil && terr != nil {
		err = netconf.Errorf(netconf.CodeIO, "removing what a killed ADD left: %w", terr)
	}
	return err
}

// restoreRecord restores what the record at path saved and removes it.
func restoreRecord(a *cniplugin.Args, path string) error {
	r, err := readRecord(path)
	switch {
	case errors.Is(err, regfile.ErrNotRegular):
		a.Logger().Warn("something that is not tuning's record is at its name; left alone, nothing restored", "err", err)
		return nil
	case errors.Is(err, errBadRecord):
		a.Logger().Warn("unreadable record removed; nothing restored", "err", err)
		return removeRecord(path)
	case err != nil:
		return fmt.Errorf("reading what ADD saved: %w", err)
	case r == nil:
		return nil
	}
	if a.Netns != "" {
		err := netns.Do(a.Netns, func() error { return r.restore(a.IfName) })
		if err != nil && !errors.Is(err, netns.ErrGone) {
			return fmt.Errorf("%w; %s is kept for the next DEL", err, path)
		}
	}
	return removeRecord(path)
}

// GC removes the records of this network's attachments that are not in
// the valid list: their interfaces went with their namespaces, so nothing
// is restored. Records of other networks, and the reference's, which name
// none, are left to their DEL. Temporary files of saves whose writer died
// go whatever their network (regfile.IsStaleTemp).
func (p *Plugin) GC(_ context.Context, a *cniplugin.Args) error {
	n, err := loadBase(a.StdinData)
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, v := range n.ValidList() {
		valid[recordName(v.ContainerID, v.IfName)] = true
	}
	entries, err := os.ReadDir(n.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing tuning's records: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if regfile.IsStaleTemp(e) {
			errs = append(errs, removeRecord(filepath.Join(n.DataDir, name)))
			continue
		}
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") || valid[name] {
			continue
		}
		path := filepath.Join(n.DataDir, name)
		r, err := readRecord(path)
		if err != nil {
			a.Logger().Warn("unreadable record of an unknown network left alone", "err", err)
			continue
		}
		if r != nil && r.Network == n.Name {
			errs = append(errs, removeRecord(path))
		}
	}
	return errors.Join(errs...)
}

// Status: tuning needs nothing but its configuration to serve ADD.
func (p *Plugin) Status(_ context.Context, a *cniplugin.Args) error {
	_, err := loadBase(a.StdinData)
	return err
}
