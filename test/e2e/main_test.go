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
	repo    string // the module's root, where make runs
)

// TestMain builds what the tests run, then runs them through testutil.Main,
// which also removes what testutil built for them (the DHCP lab's daemon).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cni-e2e-")
	if err == nil {
		testutil.AtExit(func() { os.RemoveAll(dir) })
		err = build(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	testutil.Main(m)
}

// build makes the binaries as installed, linked once for the whole run,
// into dir: the plugins, and the daemons the overlay tests run and
// TestDaemonSet's image packs with them.
func build(dir string) error {
	binDir, toolDir = filepath.Join(dir, "bin"), filepath.Join(dir, "tool")
	var err error
	if repo, err = filepath.Abs("../.."); err != nil {
		return err
	}
	cmd := exec.Command("make", "--no-print-directory", "build", "BIN="+binDir)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make build: %w\n%s", err, out)
	}
	return nil
}

// daemonDir is where make build put the node daemons (subnetd,
// subnetd-kube, subnetd-etcd, cnictl).
func daemonDir() string { return filepath.Join(binDir, "daemon") }

// plugins lists every plugin make build built: binDir's files (the
// daemons are in a directory of it).
func plugins(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(binDir)
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	if err != nil || len(names) == 0 {
		t.Fatalf("no plugins built in %s: %v", binDir, err)
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
