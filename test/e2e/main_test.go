package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// cnitoolVersion is the release of the libcni in go.mod, so that both
// clients under test behave alike.
const cnitoolVersion = "v1.3.0"

var (
	binDir  string // the suite's plugins; CNI_PATH points here and nowhere else
	toolDir string // cnitool, kept apart so that binDir holds only plugins
	repo    string // the module's root, where make runs
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
	if repo, err = filepath.Abs("../.."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The binaries as installed, linked once for the whole run: the
	// plugins, and the daemons the overlay tests run and TestDaemonSet's
	// image packs with them.
	cmd := exec.Command("make", "--no-print-directory", "build", "BIN="+binDir)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "make build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
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
