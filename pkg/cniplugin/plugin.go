// Package cniplugin runs a plugin binary: it reads the CNI environment and
// stdin (through the reference skel, the only importer of it in the suite),
// sets up per-invocation logging, calls the plugin's verb, converts the result
// to the requested spec version and maps every error to its CNI code.
package cniplugin

import (
	"context"
	"log/slog"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/netconf"
)

// versions is what every binary of the suite supports; Versions hands out
// copies, so no caller can change what the binaries announce.
var versions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// Versions returns the spec versions every binary of the suite supports, a
// copy of its own.
func Versions() []string { return slices.Clone(versions) }

// Args is one invocation: the CNI_* environment and the configuration.
type Args struct {
	Command     string
	ContainerID string
	Netns       string
	IfName      string
	Args        string // CNI_ARGS, unparsed
	Path        string // CNI_PATH, where delegated plugins are looked up
	StdinData   []byte
	Log         *slog.Logger
	linked      map[string]Plugin // see Link
}

// Logger returns the invocation's logger, or a discarding one in tests that set none.
func (a *Args) Logger() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

// Plugin is what a binary implements. Every verb returns instead of printing.
type Plugin interface {
	Add(ctx context.Context, a *Args) (types.Result, error)
	Check(ctx context.Context, a *Args) error
	Del(ctx context.Context, a *Args) error
	GC(ctx context.Context, a *Args) error
	Status(ctx context.Context, a *Args) error
}

// IfaceIndex finds this invocation's interface (CNI_IFNAME in CNI_NETNS)
// among a result's interfaces, for CHECK.
func (a *Args) IfaceIndex(res *current.Result) (int, error) {
	idx := slices.IndexFunc(res.Interfaces, func(i *current.Interface) bool {
		return i.Name == a.IfName && i.Sandbox == a.Netns
	})
	if idx < 0 {
		return -1, netconf.Invalid("prevResult lists no interface %q in sandbox %s; pass the result ADD returned", a.IfName, a.Netns)
	}
	return idx, nil
}
