// Package kubetest runs real Kubernetes for privileged tests: a control
// plane (Cluster: etcd from Debian's etcd-server, kube-apiserver and, as
// needed, kube-controller-manager and kube-scheduler) inside a network
// namespace, and nodes (Node: Debian's containerd, then kubelet, in a node
// namespace with a private mount namespace), all stopped and removed when
// the test ends. The Kubernetes commands are the release that
// test/kube/k8sbuild pins, built once by scripts/k8s-bins.sh and cached.
// It must not be imported by non-test code.
package kubetest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	binMu  sync.Mutex
	binDir = map[string]string{} // command name -> the cache directory holding it
)

// Binary returns the path of a Kubernetes command (kube-apiserver,
// kube-controller-manager, ...), building it with scripts/k8s-bins.sh when
// the cache lacks it. A cold build takes minutes: `make k8s-bins` (which
// `make test` runs first) does it outside any test's timeout.
func Binary(t testing.TB, name string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if dir, ok := binDir[name]; ok {
		return filepath.Join(dir, name)
	}
	script, err := buildScript()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(script, name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, name, err, stderr.String())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Logf("%s %s took %v:\n%s", script, name, took.Round(time.Second), stderr.String())
	}
	binDir[name] = strings.TrimSpace(string(out))
	return filepath.Join(binDir[name], name)
}

// buildScript finds scripts/k8s-bins.sh from the module root of the test
// binary's working directory (go test runs it in the package's directory).
func buildScript() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == "/dev/null" {
		return "", fmt.Errorf("finding the module root (go env GOMOD = %q): %v", gomod, err)
	}
	return filepath.Join(filepath.Dir(gomod), "scripts", "k8s-bins.sh"), nil
}
