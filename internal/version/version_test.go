package version

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		in   Info
		want string
	}{
		{Info{Version: "v1.2.3", Commit: "0123456789abcdef"}, "v1.2.3 (commit 0123456789ab)"},
		{Info{Version: "v1.2.3", Commit: "0123456789abcdef", Modified: true}, "v1.2.3 (commit 0123456789ab, with uncommitted changes)"},
		{Info{Version: "devel"}, "devel (commit unknown: not built by make)"},
	} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestBinariesSay builds a plugin, subnetd and cnictl with the Makefile's
// -X flags and reads back what each says it is.
func TestBinariesSay(t *testing.T) {
	const v, commit = "v9.8.7-1-gabcdef0", "abcdef0123456789abcdef0123456789abcdef01"
	ldflags := "-X github.com/cnisuite/cni/internal/version.Version=" + v + " -X github.com/cnisuite/cni/internal/version.Commit=" + commit
	dir := t.TempDir()
	want := v + " (commit abcdef012345)"
	for _, tc := range []struct {
		pkg  string
		tags string
		args []string
		out  string
	}{
		{"plugins/main/loopback", "", nil, "CNI loopback plugin (cnisuite) " + want},
		{"cmd/subnetd", "nokube", []string{"--version"}, "subnetd " + want},
		{"cmd/cnictl", "", []string{"version"}, "cnictl " + want},
	} {
		bin := filepath.Join(dir, filepath.Base(tc.pkg))
		build := exec.Command("go", "build", "-tags", tc.tags, "-ldflags", ldflags, "-o", bin, "github.com/cnisuite/cni/"+tc.pkg)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", tc.pkg, err, out)
		}
		out, err := exec.Command(bin, tc.args...).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), tc.out+"\n") {
			t.Errorf("%s %v: %v\n%s\nwant it to start with %q", tc.pkg, tc.args, err, out, tc.out)
		}
	}
}
