// Package testutil holds helpers shared by the suite's tests.
//
// Only tests and their fixtures (test/) import it; of the suite it imports
// internal/ociimage alone and never a package under test, so a test of any
// package can use it without a cycle.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	dir   string
	built = map[string]error{}
)

// Plugins builds the named packages of the suite (e.g. "plugins/ipam/host-local")
// once per test binary into one temporary directory and returns it, ready to
// be the CNI_PATH of a test. Call Main from TestMain so the directory goes.
func Plugins(t testing.TB, pkgs ...string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if dir == "" {
		d, err := os.MkdirTemp("", "cnisuite-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
	}
	for _, p := range pkgs {
		err, done := built[p]
		if !done {
			out, berr := exec.Command("go", "build", "-o", dir+"/", "github.com/cnisuite/cni/"+p).CombinedOutput()
			if berr != nil {
				err = fmt.Errorf("building %s: %w\n%s", p, berr, out)
			}
			built[p] = err
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Main runs the tests, then the functions given to AtExit, and removes what
// Plugins built.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	fns := atExit
	mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

var atExit []func()

// AtExit registers fn to run once the package's tests are done, for
// fixtures shared by several tests (an etcd server, say); the package's
// TestMain must call Main.
func AtExit(fn func()) {
	mu.Lock()
	defer mu.Unlock()
	atExit = append(atExit, fn)
}
