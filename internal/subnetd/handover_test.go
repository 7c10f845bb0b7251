package subnetd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnisuite/cni/internal/testutil"
)

// TestKubeHandOver: subnetd built as installed (tag nokube) links no
// Kubernetes package, nor the etcd server's, and, given --kube-subnet-mgr,
// becomes subnetd-kube next to it with the same arguments; without it, it
// exits 2 naming it.
func TestKubeHandOver(t *testing.T) {
	deps, err := exec.Command("go", "list", "-deps", "-tags", "nokube", testutil.SubnetdPackage).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, deps)
	}
	if strings.Contains(string(deps), "k8s.io/") {
		t.Errorf("subnetd built with tag nokube links Kubernetes packages:\n%s", deps)
	}
	if strings.Contains(string(deps), "go.etcd.io/etcd/server/") {
		t.Errorf("subnetd links the etcd server's packages, which only subnetd-etcd (internal/subnetd/etcdchild) may:\n%s", deps)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "subnetd")
	if out, err := exec.Command("go", "build", "-tags", "nokube", "-o", bin, testutil.SubnetdPackage).CombinedOutput(); err != nil {
		t.Fatalf("building subnetd: %v\n%s", err, out)
	}
	args := []string{"--kube-subnet-mgr", "--kube-annotation-prefix", "example.com/x", "--iface", "eth9"}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "subnetd-kube") {
		t.Fatalf("without subnetd-kube: exit %d, %s; want 2 and a message naming subnetd-kube", code, out)
	}
	fake := "#!/bin/sh\necho \"$0 $*\"\nexit 7\n"
	if err := os.WriteFile(filepath.Join(dir, "subnetd-kube"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, args...).CombinedOutput()
	want := filepath.Join(dir, "subnetd-kube") + " " + strings.Join(args, " ") + "\n"
	if code := exitCode(err); code != 7 || string(out) != want {
		t.Fatalf("with subnetd-kube: exit %d, %q; want 7 and %q", code, out, want)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
