package cnictl

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/libcni"

	"github.com/cnisuite/cni/pkg/regfile"
)

func installCommand() *command {
	return &command{name: "install", run: install,
		usage:   "[--from DIR] [--cni-bin-dir DIR] [--conflist FILE [--cni-conf-dir DIR] [--name NAME]]",
		summary: "copy the plugins into kubelet's CNI binary directory, then a conflist after checking it (the DaemonSet's init step)"}
}

// installOpts are install's flags.
type installOpts struct {
	from, binDir, conflist, confDir, name string
}

// install copies the plugins of --from into --cni-bin-dir, each written
// aside and renamed over the old one, so that kubelet never runs a half
// written binary nor misses one; then the conflist, when given, once it
// parses and every plugin it names is installed: a bad ConfigMap stops
// the DaemonSet's init step with the reason, and the node keeps its
// previous configuration.
func install(e *env, args []string) error {
	fs := newFlagSet(e, "install")
	var o installOpts
	fs.StringVar(&o.from, "from", "/opt/cni/bin", "the directory holding the plugins to install (the image's)")
	fs.StringVar(&o.binDir, "cni-bin-dir", "/host/opt/cni/bin", "the node's CNI binary directory, as mounted")
	fs.StringVar(&o.conflist, "conflist", "", "a conflist to install, e.g. the ConfigMap's cni-conf.json")
	fs.StringVar(&o.confDir, "cni-conf-dir", "/host/etc/cni/net.d", "the node's CNI configuration directory, as mounted")
	fs.StringVar(&o.name, "name", "10-flannel.conflist", "the conflist's file name in --cni-conf-dir")
	ops, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(ops) > 0 {
		return usagef("install takes no operands, got %q", ops)
	}
	if filepath.Base(o.name) != o.name || filepath.Ext(o.name) != ".conflist" {
		return usagef("--name %q: a file name ending in .conflist", o.name)
	}
	plugins, err := installPlugins(e, o.from, o.binDir)
	if err != nil {
		return err
	}
	if o.conflist == "" {
		return nil
	}
	return installConflist(e, o, plugins)
}

// installPlugins copies every executable regular file of from into to and
// returns their names.
func installPlugins(e *env, from, to string) ([]string, error) {
	if same, err := sameDir(from, to); err != nil || same {
		return nil, errors.Join(err, fmt.Errorf("--from and --cni-bin-dir are both %s", to))
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		return nil, fmt.Errorf("--from: %w", err)
	}
	var names []string
	for _, d := range entries {
		info, err := d.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			continue
		}
		data, err := os.ReadFile(filepath.Join(from, d.Name()))
		if err != nil {
			return names, err
		}
		changed, err := writeAside(filepath.Join(to, d.Name()), data, 0o755)
		if err != nil {
			return names, fmt.Errorf("installing %s: %w", d.Name(), err)
		}
		if changed {
			fmt.Fprintf(e.stdout, "installed %s\n", filepath.Join(to, d.Name()))
		}
		names = append(names, d.Name())
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("--from %s holds no executable file: is it the image's plugin directory?", from)
	}
	return names, nil
}

func sameDir(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, fmt.Errorf("--from: %w", err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, fmt.Errorf("--cni-bin-dir: %w (mount the node's CNI binary directory there)", err)
	}
	return os.SameFile(sa, sb), nil
}

// installConflist checks the conflist and writes it into the conf dir.
func installConflist(e *env, o installOpts, plugins []string) error {
	data, err := os.ReadFile(o.conflist)
	if err != nil {
		return fmt.Errorf("--conflist: %w", err)
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		return fmt.Errorf("--conflist %s is not a valid conflist, nothing installed in %s: %w", o.conflist, o.confDir, err)
	}
	for _, p := range list.Plugins {
		if !slices.Contains(plugins, p.Network.Type) {
			if _, err := os.Stat(filepath.Join(o.binDir, p.Network.Type)); err != nil {
				return fmt.Errorf("--conflist %s names plugin %q, which is neither in --from %s nor in %s: nothing installed in %s",
					o.conflist, p.Network.Type, o.from, o.binDir, o.confDir)
			}
		}
	}
	path := filepath.Join(o.confDir, o.name)
	changed, err := writeAside(path, data, 0o644)
	if err != nil {
		return fmt.Errorf("installing the conflist: %w", err)
	}
	if changed {
		fmt.Fprintf(e.stdout, "installed %s (network %q)\n", path, list.Name)
	}
	return nil
}

// writeAside replaces path with data and mode (regfile.Replace); false
// when path already holds them.
func writeAside(path string, data []byte, mode fs.FileMode) (bool, error) {
	if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() && st.Mode().Perm() == mode {
		if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, data) {
			return false, nil
		}
	}
	err := regfile.Replace(path, data, mode)
	return err == nil, err
}
