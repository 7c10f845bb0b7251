package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/cnisuite/cni/internal/testutil"
)

// cnitoolVersion is the release of the libcni in go.mod, so that both
// clients under test behave alike.
const cnitoolVersion = "v1.3.0"

var (
	binDir  string // the suite's plugins; CNI_PATH points here and nowhere else
	toolDir string // cnitool, kept apart so that binDir holds only plugins
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cni-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir, toolDir = filepath.Join(dir, "bin"), filepath.Join(dir, "tool")
	out, err := exec.Command("go", "build", "-o", binDir+"/", "github.com/cnisuite/cni/plugins/...").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the plugins: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// buildDaemons builds the daemons as installed, once, and returns their
// directory.
var buildDaemons = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(filepath.Dir(binDir), "daemon")
	return dir, testutil.BuildDaemons(dir)
})

// plugins lists every binary built from ./plugins/...
func plugins(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(binDir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("no plugins built in %s: %v", binDir, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

var buildCnitool = sync.OnceValues(func() (string, error) {
	cmd := exec.Command("go", "install", "github.com/containernetworking/cni/cnitool@"+cnitoolVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+toolDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install cnitool@%s (needs the Go module proxy): %w\n%s", cnitoolVersion, err, out)
	}
	return filepath.Join(toolDir, "cnitool"), nil
})

// cnitool returns the path of cnitool, built from the module proxy on first use.
func cnitool(t *testing.T) string {
	t.Helper()
	path, err := buildCnitool()
	if err != nil {
		t.Fatal(err)
	}
	return path
}
