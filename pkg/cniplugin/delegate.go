package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/netconf"
)

// Delegate runs another plugin (an IPAM plugin, or a flannel delegate) with
// the given verb and configuration, passing this invocation's attachment:
// in this process when the binary links it in (Link), else the binary found
// in CNI_PATH. Only ADD returns a result.
func (a *Args) Delegate(ctx context.Context, verb, pluginType string, conf []byte) (types.Result, error) {
	if p, ok := a.linked[pluginType]; ok {
		return a.runLinked(ctx, verb, pluginType, conf, p)
	}
	path, err := invoke.FindInPath(pluginType, filepath.SplitList(a.Path))
	if err != nil {
		return nil, netconf.Errorf(netconf.CodeInvalidConfig,
			"plugin %q not found in CNI_PATH %q; install it into /opt/cni/bin or fix the \"type\": %w", pluginType, a.Path, err)
	}
	ia := &invoke.Args{
		Command: verb, ContainerID: a.ContainerID, NetNS: a.Netns,
		PluginArgsStr: a.Args, IfName: a.IfName, Path: a.Path,
	}
	run := &delegateExec{DefaultExec: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}}
	if verb == "ADD" {
		return invoke.ExecPluginWithResult(ctx, path, conf, ia, run)
	}
	return nil, invoke.ExecPluginWithoutResult(ctx, path, conf, ia, run)
}

// delegateExec runs a delegate that dies with this process: when the
// runtime kills a plugin (its timeout, a crash), a delegate left running
// would go on reserving or deleting while the runtime's DEL retries, and
// undo that DEL's work (a reservation made after the release).
type delegateExec struct{ *invoke.DefaultExec }

func (e *delegateExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	var err error
	// The death signal follows the thread that forked, not the process:
	// kept on this thread until the delegate is done, so that the thread
	// cannot end under it (a locked goroutine's exit ends its thread).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// A binary being replaced cannot be run for a moment (ETXTBSY): retried
	// for up to 5 s, as libcni does.
	for try := 0; try < 6; try++ {
		stdout.Reset()
		cmd := exec.CommandContext(ctx, path)
		cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err = cmd.Run(); !errors.Is(err, syscall.ETXTBSY) {
			break
		}
		time.Sleep(time.Second)
	}
	_, _ = stderr.WriteTo(os.Stderr) // the delegate's log lines go where ours go
	if err == nil {
		return stdout.Bytes(), nil
	}
	// The delegate's CNI error, as it printed it; else what is known.
	perr := &types.Error{}
	if stdout.Len() == 0 || json.Unmarshal(stdout.Bytes(), perr) != nil {
		perr = &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf("plugin %s failed without a CNI error: %v", filepath.Base(path), err),
			Details: stdout.String()}
	}
	return nil, perr
}

// IPAM runs the network's IPAM plugin of type ipamType with verb and this
// invocation's configuration; its errors name the plugin. No IPAM (type "")
// has nothing to do.
func (a *Args) IPAM(ctx context.Context, verb, ipamType string) (types.Result, error) {
	if ipamType == "" {
		return nil, nil
	}
	r, err := a.Delegate(ctx, verb, ipamType, a.StdinData)
	if err != nil {
		return nil, fmt.Errorf("IPAM plugin %q: %w", ipamType, err)
	}
	return r, nil
}

// runLinked runs verb of a linked plugin with conf and returns what its
// binary would have: the result in conf's version, a CNI error.
func (a *Args) runLinked(ctx context.Context, verb, name string, conf []byte, p Plugin) (types.Result, error) {
	sub := *a
	sub.Command, sub.StdinData, sub.Log = verb, conf, a.Logger().With("delegate", name)
	var err error
	switch verb {
	case "ADD":
		var r types.Result
		if r, err = p.Add(ctx, &sub); err == nil {
			if r, err = r.GetAsVersion(confVersion(conf)); err == nil {
				return r, nil
			}
			// What the binary could not print, its caller never learns:
			// undone here, or it would leak.
			sub.Command = "DEL"
			err = errors.Join(err, p.Del(context.WithoutCancel(ctx), &sub))
		}
	case "CHECK":
		err = p.Check(ctx, &sub)
	case "DEL":
		err = p.Del(ctx, &sub)
	case "GC":
		err = p.GC(ctx, &sub)
	case "STATUS":
		err = p.Status(ctx, &sub)
	default:
		err = fmt.Errorf("no verb %q", verb)
	}
	if err != nil {
		return nil, ToCNIError(err)
	}
	return nil, nil
}

// IPAMResult reads the result of an IPAM plugin's ADD, which must hold an
// address.
func IPAMResult(ipamType string, r types.Result) (*current.Result, error) {
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, netconf.Errorf(netconf.CodeDecoding, "reading the result of IPAM plugin %q: %w", ipamType, err)
	}
	if len(res.IPs) == 0 {
		return nil, fmt.Errorf("IPAM plugin %q returned no IP address; check its \"ranges\"", ipamType)
	}
	return res, nil
}
