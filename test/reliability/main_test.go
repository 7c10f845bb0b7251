package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binDir holds the suite's plugins built for this run; CNI_PATH points here.
var binDir string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cni-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = filepath.Join(dir, "bin")
	out, err := exec.Command("go", "build", "-o", binDir+"/", "github.com/cnisuite/cni/plugins/...").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the plugins: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// soak reports whether the long tier was asked for (make soak).
func soak() bool { return os.Getenv("SOAK") != "" }

// repoRoot is the module's root: this package lives two levels below it.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}
