// Package release tests `make release`'s archives (scripts/release.sh).
package release

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReproducible builds the release twice: the archives and the image
// are the same bytes, the archives hold the reference's layout (./bridge,
// ... at the top, owned by root), their checksum files verify, and the
// manifests name the release's image.
func TestReproducible(t *testing.T) {
	if _, err := exec.LookPath("sha512sum"); err != nil {
		t.Skip("needs coreutils' sha256sum and sha512sum")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	const version = "v0.0.0-test"
	ldflags := "-X github.com/cnisuite/cni/internal/version.Version=" + version
	var dirs []string
	for range 2 {
		dir := t.TempDir()
		cmd := exec.Command("./scripts/release.sh", dir, version, ldflags)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("release.sh: %v\n%s", err, out)
		}
		dirs = append(dirs, dir)
	}
	for _, name := range []string{"cni-plugins-linux-amd64-" + version + ".tgz", "cnisuite-subnetd-linux-amd64-" + version + ".tgz",
		"cnisuite-image-linux-amd64-" + version + ".tar"} {
		a, errA := os.ReadFile(filepath.Join(dirs[0], name))
		b, errB := os.ReadFile(filepath.Join(dirs[1], name))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds (%v, %v)", name, errA, errB)
		}
		for _, sum := range []string{"sha256sum", "sha512sum"} {
			check := exec.Command(sum, "-c", name+"."+strings.TrimSuffix(sum, "sum"))
			check.Dir = dirs[0]
			if out, err := check.CombinedOutput(); err != nil {
				t.Errorf("%s -c: %v\n%s", sum, err, out)
			}
		}
	}
	checkListing(t, filepath.Join(dirs[0], "cni-plugins-linux-amd64-"+version+".tgz"),
		"./README.md", "./bandwidth", "./bridge", "./flannel", "./host-local", "./loopback", "./macvlan", "./portmap")
	checkListing(t, filepath.Join(dirs[0], "cnisuite-subnetd-linux-amd64-"+version+".tgz"),
		"./README.md", "./cnictl", "./kube-flannel.yml", "./subnetd", "./subnetd-daemonset.yaml", "./subnetd-etcd", "./subnetd-kube")
	checkImageNamed(t, filepath.Join(dirs[0], "cnisuite-subnetd-linux-amd64-"+version+".tgz"), "localhost/cnisuite/subnetd:"+version)
}

// checkImageNamed: the archive's manifests run the release's image.
func checkImageNamed(t *testing.T, subnetdTgz, image string) {
	t.Helper()
	for _, manifest := range []string{"./kube-flannel.yml", "./subnetd-daemonset.yaml"} {
		out, err := exec.Command("tar", "-xzOf", subnetdTgz, manifest).Output()
		if err != nil {
			t.Fatalf("tar -xzOf %s: %v", manifest, err)
		}
		if n := strings.Count(string(out), "image: "+image+"\n"); n == 0 || strings.Contains(string(out), "image: IMAGE") {
			t.Errorf("%s names the image %d times, or still IMAGE", manifest, n)
		}
	}
}

// checkListing: the archive holds exactly want (besides ./), owned by 0/0,
// the binaries executable by all.
func checkListing(t *testing.T, tgz string, want ...string) {
	t.Helper()
	out, err := exec.Command("tar", "-tvzf", tgz).CombinedOutput()
	if err != nil {
		t.Fatalf("tar -tvzf %s: %v\n%s", tgz, err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "0/0" {
			t.Errorf("%s: %q not owned by 0/0", filepath.Base(tgz), line)
			continue
		}
		name := f[len(f)-1]
		if name == "./" {
			continue
		}
		names = append(names, name)
		binary := !strings.HasSuffix(name, ".md") && !strings.HasSuffix(name, ".yml") && !strings.HasSuffix(name, ".yaml")
		if binary != (f[0] == "-rwxr-xr-x") {
			t.Errorf("%s: %s has mode %s", filepath.Base(tgz), name, f[0])
		}
	}
	if !slices.Equal(names, want) {
		t.Errorf("%s holds %v, want %v", filepath.Base(tgz), names, want)
	}
}
