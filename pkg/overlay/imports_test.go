package overlay

import (
	"os/exec"
	"strings"
	"testing"
)

// TestKnowsNoLeases: the overlay knows peers, never leases; nothing it
// links reads or writes the lease store or its JSON (pkg/subnet and its
// store clients).
func TestKnowsNoLeases(t *testing.T) {
	deps, err := exec.Command("go", "list", "-deps", "github.com/cnisuite/cni/pkg/overlay").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, deps)
	}
	for _, dep := range strings.Fields(string(deps)) {
		if strings.HasPrefix(dep, "github.com/cnisuite/cni/pkg/subnet") || strings.HasPrefix(dep, "go.etcd.io/") || strings.HasPrefix(dep, "k8s.io/") {
			t.Errorf("pkg/overlay links %s", dep)
		}
	}
}
