// Package version says which build of the suite a binary is: what the
// Makefile sets with -ldflags -X (from git describe and the commit), else
// what the Go toolchain stamped from git (when -buildvcs is on).
//
// It imports nothing of the suite: every binary and pkg/cniplugin import it,
// the one internal package pkg/ may.
package version

import (
	"fmt"
	"runtime/debug"
)

// Set by the Makefile's builds: -ldflags "-X
// github.com/cnisuite/cni/internal/version.Version=v1.2.3 -X ...Commit=<hash>".
var Version, Commit string

// Info is what a binary knows of its build.
type Info struct {
	Version  string // "v1.2.3", git describe's "v1.2.3-4-g0123456", or "devel"
	Commit   string // the full commit hash; empty when unknown
	Modified bool   // the toolchain saw uncommitted changes (git describe says -dirty)
}

// Get reads the build's information.
func Get() Info {
	i := Info{Version: Version, Commit: Commit}
	if i.Commit == "" {
		i.stamped()
	}
	if i.Version == "" {
		i.Version = "devel"
	}
	return i
}

// stamped fills in what the toolchain stamped (with -buildvcs), read only
// when the Makefile set nothing: every plugin invocation asks for its
// version, and the build info is a string parsed on each call.
func (i *Info) stamped() {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
		if i.Version == "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
	}
}

// String is the version with its commit, e.g. "v1.2.3 (commit 0123456789ab)".
func (i Info) String() string {
	switch {
	case i.Commit == "":
		return i.Version + " (commit unknown: not built by make)"
	case i.Modified:
		return fmt.Sprintf("%s (commit %.12s, with uncommitted changes)", i.Version, i.Commit)
	}
	return fmt.Sprintf("%s (commit %.12s)", i.Version, i.Commit)
}
