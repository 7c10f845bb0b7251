package cniplugin

import (
	"context"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/cnisuite/cni/pkg/netconf"
)

// Delegate runs another plugin (an IPAM plugin, or a flannel delegate) found
// in CNI_PATH with the given verb and configuration, passing this
// invocation's attachment. Only ADD returns a result.
func (a *Args) Delegate(ctx context.Context, verb, pluginType string, conf []byte) (types.Result, error) {
	path, err := invoke.FindInPath(pluginType, filepath.SplitList(a.Path))
	if err != nil {
		return nil, netconf.Errorf(netconf.CodeInvalidConfig,
			"plugin %q not found in CNI_PATH %q; install it into /opt/cni/bin or fix the \"type\": %w", pluginType, a.Path, err)
	}
	ia := &invoke.Args{
		Command: verb, ContainerID: a.ContainerID, NetNS: a.Netns,
		PluginArgsStr: a.Args, IfName: a.IfName, Path: a.Path,
	}
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
	if verb == "ADD" {
		return invoke.ExecPluginWithResult(ctx, path, conf, ia, exec)
	}
	return nil, invoke.ExecPluginWithoutResult(ctx, path, conf, ia, exec)
}
