package cniplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	buildversion "github.com/cnisuite/cni/internal/version"
	"github.com/cnisuite/cni/pkg/netconf"
)

// Main runs p as a CNI plugin binary and exits.
func Main(name string, p Plugin, opts ...Option) {
	os.Exit(run(name, p, os.Stdout, opts...))
}

// Option changes how Main runs a plugin.
type Option func(*runner)

// Link makes a delegated plugin of type name (an IPAM plugin, a meta
// plugin's delegate) run in this process, through p, instead of in the
// binary of that name, which must run the same p: the same code, store and
// locks, without the process start and exec (~3 ms of CPU, on each ADD and
// DEL) that a delegation costs.
func Link(name string, p Plugin) Option {
	return func(r *runner) {
		if r.linked == nil {
			r.linked = map[string]Plugin{}
		}
		r.linked[name] = p
	}
}

func run(name string, p Plugin, stdout io.Writer, opts ...Option) int {
	r := &runner{name: name, plugin: p, stdout: stdout}
	for _, o := range opts {
		o(r)
	}
	funcs := skel.CNIFuncs{Add: r.add, Check: r.verb(p.Check), Del: r.verb(p.Del), GC: r.verb(p.GC), Status: r.verb(p.Status)}
	err := ToCNIError(boundStdin())
	if err == nil {
		err = skel.PluginMainFuncsWithError(funcs, version.PluginSupports(versions...), "CNI "+name+" plugin (cnisuite) "+buildversion.Get().String())
	}
	if err == nil {
		return 0
	}
	if r.log != nil {
		r.log.Error("failed", "code", err.Code, "msg", err.Msg)
	}
	if perr := printError(stdout, err, r.version); perr != nil {
		fmt.Fprintf(os.Stderr, "%s: cannot print error: %v\n", name, perr)
	}
	return 1
}

// printError writes the spec's error object, with the cniVersion key that
// the 1.1 spec lists and the reference omits: the configuration's version
// when the error came after it was read, else the newest.
func printError(w io.Writer, e *types.Error, cniVersion string) error {
	if cniVersion == "" {
		cniVersion = version.Current()
	}
	out := struct {
		CNIVersion string `json:"cniVersion"`
		*types.Error
	}{cniVersion, e}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	return enc.Encode(out)
}

// boundStdin applies netconf's limit to stdin before skel sees it: skel
// reads all of stdin, however long, and parses it before any verb runs.
// What was read is handed to skel as its stdin through a pipe.
func boundStdin() error {
	if cmd := os.Getenv("CNI_COMMAND"); cmd == "" || cmd == "VERSION" {
		return nil // skel reads no stdin: a terminal is not waited on
	}
	data, err := netconf.ReadConf(os.Stdin)
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("passing the configuration on: %w", err)
	}
	go func() {
		_, _ = w.Write(data) // skel reads until the close; a short write is a short configuration, refused as such
		w.Close()
	}()
	os.Stdin = r
	return nil
}

type runner struct {
	name    string
	plugin  Plugin
	linked  map[string]Plugin // delegated plugins run in this process, by type
	stdout  io.Writer
	log     *slog.Logger
	version string // the configuration's cniVersion, once a verb has read it
}

func (r *runner) args(cmd string, sa *skel.CmdArgs) *Args {
	r.log = newLogger(r.name, cmd, sa)
	r.version = confVersion(sa.StdinData)
	return &Args{
		Command: cmd, ContainerID: sa.ContainerID, Netns: sa.Netns, IfName: sa.IfName,
		Args: sa.Args, Path: sa.Path, StdinData: sa.StdinData, Log: r.log, linked: r.linked,
	}
}

func (r *runner) add(sa *skel.CmdArgs) error {
	a := r.args("ADD", sa)
	res, err := r.plugin.Add(context.Background(), a)
	if err != nil {
		return ToCNIError(err)
	}
	if err := PrintResult(r.stdout, res, r.version); err != nil {
		return ToCNIError(err)
	}
	a.Logger().Info("added")
	return nil
}

func (r *runner) verb(fn func(context.Context, *Args) error) func(*skel.CmdArgs) error {
	return func(sa *skel.CmdArgs) error {
		a := r.args(os.Getenv("CNI_COMMAND"), sa)
		if err := fn(context.Background(), a); err != nil {
			return ToCNIError(err)
		}
		a.Logger().Debug("done")
		return nil
	}
}

// PrintResult writes res converted to the configuration's cniVersion.
func PrintResult(w io.Writer, res types.Result, cniVersion string) error {
	conv, err := res.GetAsVersion(cniVersion)
	if err != nil {
		return fmt.Errorf("converting the result to version %s: %w", cniVersion, err)
	}
	return conv.PrintTo(w)
}

func confVersion(stdin []byte) string {
	var c struct {
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(stdin, &c) // skel has already decoded it once
	if c.CNIVersion == "" {
		return "0.1.0"
	}
	return strings.TrimSpace(c.CNIVersion)
}
