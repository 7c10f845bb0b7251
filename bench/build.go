package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// refModule is where the reference plugins live on the module proxy.
const refModule = "github.com/containernetworking/plugins"

// refPackages are the reference binaries the scenarios and the start-up
// figures use, by package path inside refModule.
var refPackages = []string{
	"plugins/main/bridge", "plugins/main/macvlan", "plugins/main/loopback",
	"plugins/ipam/host-local", "plugins/ipam/static", "plugins/meta/portmap", "plugins/meta/tuning",
	"plugins/meta/bandwidth", "plugins/meta/firewall", "plugins/main/ptp", "plugins/main/tap", "plugins/main/host-device", "plugins/meta/sbr", "plugins/ipam/dhcp",
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

// buildEnv is how both sides are built: static (CGO_ENABLED=0), as the
// reference's release binaries and the Makefile's are, by the same
// toolchain, so that sizes and start-up times compare code, not build
// settings. A dynamically linked Go binary takes about 1 ms longer to start.
func buildEnv(extra ...string) []string {
	return append(append(os.Environ(), "CGO_ENABLED=0"), extra...)
}

// buildOurs builds ./plugins/... of the module at repo into dir, as `make
// build` does.
func buildOurs(ctx context.Context, repo, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dir+"/", "./plugins/...")
	cmd.Dir = repo
	cmd.Env = buildEnv()
	return runBuild(cmd, "building our plugins")
}

// buildRef installs the reference plugins at version from the module proxy
// into dir.
func buildRef(ctx context.Context, version, dir string) error {
	args := []string{"install", "-trimpath"}
	for _, p := range refPackages {
		args = append(args, refModule+"/"+p+"@"+version)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = buildEnv("GOBIN="+dir, "GOWORK=off")
	cmd.Dir = os.TempDir() // outside our module, so its go.mod plays no part
	return runBuild(cmd, fmt.Sprintf("building the reference plugins %s (needs the Go module proxy)", version))
}

func runBuild(cmd *exec.Cmd, what string) error {
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %s: %w\n%s", what, strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}

// tools are the programs the bench runs besides the plugins; "" when no
// selected scenario runs them.
type tools struct {
	cnitool string // the cnitool of go.mod's libcni, for the cnitool driver
	floor   string // bench/floor, for the floor rows
}

// cnitoolPkg is cnitool's package, built at the libcni version go.mod
// requires: the code the libcni driver runs in-process.
const cnitoolPkg = "github.com/containernetworking/cni/cnitool"

// buildTools builds the tools the selected scenarios and drivers need into
// dir, static and with -trimpath as the plugins are.
func buildTools(ctx context.Context, cfg config, dir string) (tools, error) {
	var t tools
	if cfg.uses(driverCnitool) && slices.ContainsFunc(scenarios(), cfg.selects) {
		t.cnitool = filepath.Join(dir, "cnitool")
		if err := buildTool(ctx, cfg.repo, t.cnitool, cnitoolPkg); err != nil {
			return t, err
		}
	}
	hasFloor := func(sc scenario) bool { return sc.floor != nil && cfg.selects(sc) }
	if cfg.uses(driverLibcni) && slices.ContainsFunc(scenarios(), hasFloor) {
		t.floor = filepath.Join(dir, "floor")
		if err := buildTool(ctx, cfg.repo, t.floor, "./bench/floor"); err != nil {
			return t, err
		}
	}
	return t, nil
}

func buildTool(ctx context.Context, repo, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = repo
	cmd.Env = buildEnv()
	return runBuild(cmd, "building "+pkg)
}
