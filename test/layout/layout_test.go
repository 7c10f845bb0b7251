// Package layout checks the tree's shape that README's Layout section states: which part of the
// module may depend on which, and that every library package says in its doc comment what it owns
// and what it must not import.
package layout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
)

const module = "github.com/cnisuite/cni/"

// plugins are the plugins' packages: each stands alone (flannel's links bridge, its default
// delegate), and no shared package depends on one.
var plugins = []string{
	"pkg/bandwidth",
	"pkg/bridge",
	"pkg/dhcp",
	"pkg/dhcp/dhcpclient",
	"pkg/firewall",
	"pkg/flannel",
	"pkg/hostdevice",
	"pkg/ipam/hostlocal",
	"pkg/ipam/static",
	"pkg/loopback",
	"pkg/macvlan",
	"pkg/portmap",
	"pkg/ptp",
	"pkg/sbr",
	"pkg/tap",
	"pkg/tuning",
}

// forbidden lists, per package path prefix (relative to the module), the prefixes its packages must
// not depend on, directly or through another package.
var forbidden = map[string][]string{
	// Libraries never depend on a binary, on internal/ but version, or on the tests: a binary is
	// wiring over pkg/.
	"pkg/": {"plugins/", "cmd/", "internal/subnetd", "internal/cnictl", "internal/testutil", "internal/proc", "internal/ociimage", "bench", "test/"},
	// IPAM reserves addresses and never configures a link (TestImports: no plugin on another).
	"pkg/ipam/hostlocal": {"pkg/link"},
	"pkg/ipam/static":    {"pkg/link"},
	"pkg/dhcp":           {"pkg/link"},
	// The shared layers below the plugins and the daemon.
	"pkg/containerif": append(plugins, "pkg/netfilter", "pkg/overlay", "pkg/subnet"),
	"pkg/link":        append(plugins, "pkg/netfilter", "pkg/overlay", "pkg/subnet"),
	"pkg/netfilter/":  append(plugins, "pkg/overlay", "pkg/subnet", "pkg/link"),
	// The overlay knows peers, never leases: nothing it links reads the lease store or its JSON.
	"pkg/overlay": {"pkg/subnet", "go.etcd.io/", "k8s.io/"},
	// Everything imports these; they import nothing of the suite.
	"pkg/family":  {""},
	"pkg/netconf": {""},
	// The operator's tool judges with the daemon's packages, never with the daemon itself.
	"internal/cnictl":  {"plugins/", "cmd/", "internal/subnetd"},
	"internal/subnetd": {"plugins/", "cmd/", "internal/cnictl"},
}

type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Deps       []string
}

// list is every package of the module, read once for both tests.
func list(t *testing.T) []pkg {
	pkgs, err := listOnce()
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

var listOnce = sync.OnceValues(func() ([]pkg, error) {
	out, err := exec.Command("go", "list", "-json", module+"...").Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w", err)
	}
	var pkgs []pkg
	for dec := json.NewDecoder(bytes.NewReader(out)); dec.More(); {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			return nil, err
		}
		p.ImportPath = strings.TrimPrefix(p.ImportPath, module)
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
})

func TestImports(t *testing.T) {
	for _, p := range list(t) {
		for prefix, bans := range forbidden {
			if !strings.HasPrefix(p.ImportPath, prefix) || (prefix == "pkg/" && double(p.ImportPath)) {
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
		if slices.Contains(plugins, p.ImportPath) {
			for _, dep := range p.Deps {
				// A plugin may use its own subpackages (the dhcp daemon, its client's protocol).
				if other := pluginOf(dep); other != "" && !(p.ImportPath == "pkg/flannel" && other == "pkg/bridge") && !strings.HasPrefix(other, p.ImportPath+"/") {
					t.Errorf("the plugin %s depends on the plugin %s", p.ImportPath, other)
				}
			}
		}
		if double(p.ImportPath) || strings.HasPrefix(p.ImportPath, "test/") {
			continue
		}
		for _, dep := range p.Deps {
			if rel, ours := strings.CutPrefix(dep, module); ours && double(rel) {
				t.Errorf("%s links the test double %s", p.ImportPath, rel)
			}
		}
	}
}

// costlyInit are packages whose init every start of a binary linking them pays, kept out of the
// interface plugins, which link their IPAM (pkg/ipam/*, pkg/dhcp/dhcpclient): net/rpc brings
// html/template, encoding/gob's init alone costs ~0.5 ms.
var costlyInit = []string{"encoding/gob", "net/rpc", "net/http", "html/template", "text/template", "github.com/insomniacslk/"}

// TestNoCostlyInit: no interface plugin's binary links a package of costlyInit.
func TestNoCostlyInit(t *testing.T) {
	for _, p := range list(t) {
		if !strings.HasPrefix(p.ImportPath, "plugins/main/") && p.ImportPath != "plugins/meta/flannel" {
			continue
		}
		for _, dep := range p.Deps {
			if slices.ContainsFunc(costlyInit, func(c string) bool { return strings.HasPrefix(dep, c) }) {
				t.Errorf("%s links %s, whose init each of its runs would pay", p.ImportPath, dep)
			}
		}
	}
}

// pluginOf is the plugin package dep is, or "".
func pluginOf(dep string) string {
	rel, ours := strings.CutPrefix(dep, module)
	if ours && slices.Contains(plugins, rel) {
		return rel
	}
	return ""
}

// double says whether a package is a test double (pkg/subnet/subnettest): it sits beside what it
// stands in for, may use the test fixtures, and only tests may link it.
func double(path string) bool {
	return strings.HasPrefix(path, "pkg/") && strings.HasSuffix(path, "test")
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

// TestDocs: each library package's doc comment says what it must not import, so the rule is read
// where the code is, not only enforced here.
func TestDocs(t *testing.T) {
	for _, p := range list(t) {
		if !strings.HasPrefix(p.ImportPath, "pkg/") && !strings.HasPrefix(p.ImportPath, "internal/") {
			continue
		}
		doc := packageDoc(t, p)
		if doc == "" {
			t.Errorf("%s has no package doc comment", p.ImportPath)
		} else if !strings.Contains(doc, "import") {
			t.Errorf("%s: its doc comment does not say what it must not import", p.ImportPath)
		}
	}
}

func packageDoc(t *testing.T, p pkg) string {
	var doc strings.Builder
	for _, name := range p.GoFiles {
		f, err := parser.ParseFile(token.NewFileSet(), p.Dir+"/"+name, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if f.Doc != nil {
			doc.WriteString(f.Doc.Text())
		}
	}
	return doc.String()
}
