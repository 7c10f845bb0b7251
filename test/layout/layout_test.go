// Package layout checks the tree's shape that README's Layout section states: which part of the
// module may depend on which.
package layout

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/cnisuite/cni/"

// forbidden lists, per package path prefix (relative to the module), the prefixes its packages must
// not depend on, directly or through another package.
var forbidden = map[string][]string{
	// Libraries never depend on a binary or on the tests: a binary is wiring over pkg/.
	"pkg/": {"plugins/", "cmd/", "daemon/", "internal/subnetd", "internal/cnictl", "internal/testutil", "bench", "test/"},
	// The overlay knows peers, never leases: nothing it links reads the lease store or its JSON.
	"pkg/overlay": {"pkg/subnet", "go.etcd.io/", "k8s.io/"},
	// Everything imports the family type; it imports nothing of the suite.
	"pkg/family": {""},
	// The operator's tool judges with the daemon's packages, never with the daemon itself.
	"internal/cnictl":  {"plugins/", "cmd/", "daemon/", "internal/subnetd"},
	"internal/subnetd": {"plugins/", "cmd/", "internal/cnictl"},
}

type pkg struct {
	ImportPath string
	Dir        string
	Deps       []string
}

func list(t *testing.T) []pkg {
	out, err := exec.Command("go", "list", "-json", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	for dec := json.NewDecoder(strings.NewReader(string(out))); dec.More(); {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		p.ImportPath = strings.TrimPrefix(p.ImportPath, module)
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestImports(t *testing.T) {
	for _, p := range list(t) {
		for prefix, bans := range forbidden {
			if !strings.HasPrefix(p.ImportPath, prefix) {
				continue
			}
			for _, dep := range p.Deps {
				for _, ban := range bans {
					if banned(dep, ban) {
						t.Errorf("%s depends on %s", p.ImportPath, dep)
					}
				}
			}
		}
	}
}

// banned says whether dep falls under ban: a module path prefix, a third-party prefix, or "" for
// anything of the module.
func banned(dep, ban string) bool {
	rel, ours := strings.CutPrefix(dep, module)
	switch {
	case ban == "":
		return ours
	case strings.Contains(ban, "."):
		return strings.HasPrefix(dep, ban)
	default:
		return ours && strings.HasPrefix(rel, ban)
	}
}
