package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// refModule is where the reference plugins live on the module proxy.
const refModule = "github.com/containernetworking/plugins"

// refPackages are the reference binaries the scenarios and the start-up
// figures use, by package path inside refModule.
var refPackages = []string{
	"plugins/main/bridge", "plugins/main/macvlan", "plugins/main/loopback",
	"plugins/ipam/host-local", "plugins/meta/portmap",
}

// side is one set of plugin binaries under test.
type side struct {
	name string // "reference" or "ours"
	dir  string // CNI_PATH: the binaries and nothing else
}

// has says whether the side has every named binary.
func (s side) has(bins ...string) bool {
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(s.dir, b)); err != nil {
			return false
		}
	}
	return true
}

// buildOurs builds ./plugins/... of the module at repo into dir, with the
// flags the Makefile uses.
func buildOurs(ctx context.Context, repo, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dir+"/", "./plugins/...")
	cmd.Dir = repo
	return runBuild(cmd, "building our plugins")
}

// buildRef installs the reference plugins at version from the module proxy
// into dir. They get the same compiler and flags as ours, so that sizes and
// start-up times compare code, not build settings.
func buildRef(ctx context.Context, version, dir string) error {
	args := []string{"install", "-trimpath"}
	for _, p := range refPackages {
		args = append(args, refModule+"/"+p+"@"+version)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off")
	cmd.Dir = os.TempDir() // outside our module, so its go.mod plays no part
	return runBuild(cmd, fmt.Sprintf("building the reference plugins %s (needs the Go module proxy)", version))
}

func runBuild(cmd *exec.Cmd, what string) error {
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %s: %w\n%s", what, strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}
