// Package flannel is the meta plugin of flannel networks: it turns the
// node's subnet.env (written by subnetd or flanneld) into the configuration
// of another plugin (bridge with host-local by default), saves it per
// attachment and delegates to it, a drop-in replacement for flannel's CNI
// plugin. The flannel binary runs it, linking in the bridge and host-local
// plugins so that such delegates run without an exec. It meets subnetd only
// in pkg/subnet/envfile: it must not import pkg/subnet itself, pkg/overlay
// or a store client, which every pod's ADD would pay for.
package flannel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// delegateFunc runs the delegated plugin; tests replace it.
type delegateFunc func(ctx context.Context, a *cniplugin.Args, verb, pluginType string, conf []byte) (types.Result, error)

// Plugin is the flannel plugin's verbs. Its zero value delegates through
// Args.Delegate.
type Plugin struct {
	delegate delegateFunc // nil: Args.Delegate (in this process when linked)
}

func (p *Plugin) call(ctx context.Context, a *cniplugin.Args, verb string, d delegateConf) (types.Result, error) {
	typ := d.typ()
	run := p.delegate
	if run == nil {
		run = func(ctx context.Context, a *cniplugin.Args, verb, typ string, conf []byte) (types.Result, error) {
			return a.Delegate(ctx, verb, typ, conf)
		}
	}
	res, err := run(ctx, a, verb, typ, d.bytes())
	if err != nil {
		return nil, fmt.Errorf("delegate %q %s: %w", typ, verb, err)
	}
	return res, nil
}

// Add renders the delegate's configuration from subnet.env, saves it and
// delegates, passing the delegate's result through. A failed delegate ADD
// is followed by a delegate DEL with the same configuration, and the saved
// file goes only once that DEL succeeded, so the runtime's DEL can retry.
func (p *Plugin) Add(ctx context.Context, a *cniplugin.Args) (types.Result, error) {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return nil, err
	}
	if err := preflight(a, c.delegateType); err != nil {
		return nil, err
	}
	env, err := waitEnv(ctx, c)
	if err != nil {
		return nil, err
	}
	d := render(c, env)
	log := a.Logger().With("delegate", d.typ())
	if err := readdressBridge(d, env, log); err != nil {
		return nil, err
	}
	st := store{c.DataDir}
	if err := st.save(a.ContainerID, a.IfName, d.bytes()); err != nil {
		return nil, err
	}
	res, err := p.call(ctx, a, "ADD", d)
	if err != nil {
		if _, derr := p.call(ctx, a, "DEL", d); derr != nil {
			log.Error("undoing the failed ADD failed; the saved configuration stays for the runtime's DEL", "err", derr)
		} else if rerr := st.remove(st.path(a.ContainerID, a.IfName)); rerr != nil {
			log.Error("failed ADD undone, but its saved configuration stays", "err", rerr)
		}
		return nil, err
	}
	return res, nil
}

// preflight fails an ADD that the delegate would refuse before it can run
// (CNI_ARGS malformed, delegate not installed): its undo could not run
// either, and would leave the saved configuration behind.
func preflight(a *cniplugin.Args, pluginType string) error {
	if _, err := netconf.ParseArgs(a.Args); err != nil {
		return err
	}
	if _, err := invoke.FindInPath(pluginType, filepath.SplitList(a.Path)); err != nil {
		return netconf.Errorf(netconf.CodeInvalidConfig,
			"delegate plugin %q not found in CNI_PATH %q; install it into /opt/cni/bin or fix \"delegate\": {\"type\": ...}: %w", pluginType, a.Path, err)
	}
	return nil
}

// Del replays the saved configuration and removes it only after the
// delegate's DEL succeeded, so that a failed DEL can be retried with it.
// Without a saved (or readable) configuration it renders one from the
// current subnet.env and delegates anyway: the delegate releases by
// container ID, and succeeds when there is nothing to release. With
// subnet.env gone too, that DEL is best effort and its failure only logged.
// The delegate and ipam blocks are checked only when rendering is needed.
func (p *Plugin) Del(ctx context.Context, a *cniplugin.Args) error {
	c, err := decodeConf(a.StdinData)
	if err != nil {
		return err
	}
	log := a.Logger()
	st := store{c.DataDir}
	d, path, err := p.saved(st, a)
	if err != nil {
		return err
	}
	bestEffort := false
	if d == nil {
		if err := c.check(); err != nil {
			return err
		}
		var envErr error
		if d, envErr = p.fallback(c); envErr != nil {
			log.Warn("no saved delegate configuration and no usable subnet.env; DEL without ranges", "err", envErr)
			bestEffort = true
		}
	}
	if _, err := p.call(ctx, a, "DEL", d); err != nil {
		if bestEffort {
			log.Warn("best-effort DEL failed", "err", err)
			return nil
		}
		return err
	}
	return st.forget(a.ContainerID, a.IfName, path)
}

// saved returns the attachment's saved configuration and its path; nil
// when there is none, or when it is unreadable or not a file save writes
// (logged; its path is still returned so that a successful DEL removes it).
func (p *Plugin) saved(st store, a *cniplugin.Args) (delegateConf, string, error) {
	data, path, err := st.load(a.ContainerID, a.IfName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil && !unusable(err) {
		return nil, "", err
	}
	var d delegateConf
	if err == nil {
		d, err = parseDelegate(data)
	}
	if err != nil {
		a.Logger().Warn("the saved delegate configuration is unreadable; rendering one from subnet.env", "file", path, "err", err)
		return nil, path, nil
	}
	return d, path, nil
}

// fallback renders the delegate configuration from subnet.env as it is now,
// without waiting; when it is unusable, from the configuration alone.
func (p *Plugin) fallback(c *NetConf) (delegateConf, error) {
	env, err := readEnv(c)
	if err != nil {
		return render(c, envfile.Env{}), err
	}
	return render(c, env), nil
}

// Check runs the delegate's CHECK with the saved configuration and the
// runtime's prevResult, at the configuration's version.
func (p *Plugin) Check(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	data, path, err := store{c.DataDir}.load(a.ContainerID, a.IfName)
	if errors.Is(err, fs.ErrNotExist) {
		return netconf.Errorf(netconf.CodeUnknownContainer, "flannel has no record of attachment %s/%s (no saved configuration in %s): "+
			"it was not added through this network, or its record was removed; re-create the pod", a.ContainerID, a.IfName, c.DataDir)
	}
	if err != nil {
		return err
	}
	d, err := parseDelegate(data)
	if err != nil {
		return netconf.Errorf(netconf.CodeDecoding, "the saved delegate configuration %s is unreadable; re-create the pod: %w", path, err)
	}
	d.set("cniVersion", c.CNIVersion)
	if len(c.RawPrevResult) > 0 {
		d["prevResult"] = c.RawPrevResult
	}
	_, err = p.call(ctx, a, "CHECK", d)
	return err
}

// GC forwards the runtime's valid attachments to the delegate, with the
// configuration rendered from subnet.env (without ranges when it is gone:
// collecting needs none), then removes the saved configurations of this
// network whose attachment is not valid.
func (p *Plugin) GC(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	log := a.Logger()
	var errs []error
	d, envErr := p.fallback(c)
	if envErr != nil {
		log.Warn("subnet.env unusable; the delegate's GC gets a configuration without ranges", "err", envErr)
	}
	valid := c.ValidList()
	if valid == nil {
		valid = []netconf.Attachment{}
	}
	d.set("cni.dev/valid-attachments", valid)
	if _, err := p.call(ctx, a, "GC", d); err != nil {
		errs = append(errs, err)
	}
	removed, err := store{c.DataDir}.prune(c.Name, valid)
	if len(removed) > 0 {
		log.Info("removed saved configurations of attachments the runtime no longer has", "files", removed)
	}
	return errors.Join(append(errs, err)...)
}

// Status fails with code 50 while the node's subnet is unknown, and
// otherwise asks the delegate, which asks its IPAM (code 51 when full).
func (p *Plugin) Status(ctx context.Context, a *cniplugin.Args) error {
	c, err := loadConf(a.StdinData)
	if err != nil {
		return err
	}
	env, err := readEnv(c)
	if err != nil {
		return statusOf(c, err)
	}
	_, err = p.call(ctx, a, "STATUS", render(c, env))
	return err
}
