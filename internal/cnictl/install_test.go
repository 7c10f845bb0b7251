package cnictl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// installDirs makes an image's plugin dir with two plugins and a
// non-executable file, and empty node dirs.
func installDirs(t *testing.T) (from, bin, conf string) {
	t.Helper()
	root := t.TempDir()
	from, bin, conf = filepath.Join(root, "image-bin"), filepath.Join(root, "bin"), filepath.Join(root, "net.d")
	for _, d := range []string{from, bin, conf} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, mode := range map[string]os.FileMode{"flannel": 0o755, "bridge": 0o755, "README.md": 0o644} {
		if err := os.WriteFile(filepath.Join(from, name), []byte("content of "+name), mode); err != nil {
			t.Fatal(err)
		}
	}
	return from, bin, conf
}

func writeConflist(t *testing.T, types ...string) string {
	t.Helper()
	var plugins []string
	for _, typ := range types {
		plugins = append(plugins, `{"type":"`+typ+`"}`)
	}
	path := filepath.Join(t.TempDir(), "cni-conf.json")
	data := `{"cniVersion":"1.0.0","name":"cbr0","plugins":[` + strings.Join(plugins, ",") + `]}`
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

// TestInstall: the executables and the conflist land with their modes, no
// temporary file stays, and a second run changes nothing and says nothing.
func TestInstall(t *testing.T) {
	from, bin, conf := installDirs(t)
	list := writeConflist(t, "flannel", "bridge")
	args := []string{"install", "--from", from, "--cni-bin-dir", bin, "--conflist", list, "--cni-conf-dir", conf}
	code, out, errOut := run(args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"installed " + filepath.Join(bin, "flannel"), "installed " + filepath.Join(conf, "10-flannel.conflist") + ` (network "cbr0")`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if got := strings.Join(entries(t, bin), " "); got != "bridge flannel" {
		t.Errorf("%s holds %s", bin, got)
	}
	if got := strings.Join(entries(t, conf), " "); got != "10-flannel.conflist" {
		t.Errorf("%s holds %s", conf, got)
	}
	for path, mode := range map[string]os.FileMode{filepath.Join(bin, "bridge"): 0o755, filepath.Join(conf, "10-flannel.conflist"): 0o644} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", path, st.Mode(), err, mode)
		}
	}
	if code, out, _ := run(args...); code != 0 || out != "" {
		t.Errorf("second install: exit %d, output %q", code, out)
	}
}

// TestInstallRefusesBadConflist: a conflist that does not parse, or that
// names a plugin the node will not have, leaves the node's configuration
// as it was, and says why.
func TestInstallRefusesBadConflist(t *testing.T) {
	from, bin, conf := installDirs(t)
	old := filepath.Join(conf, "10-flannel.conflist")
	if err := os.WriteFile(old, []byte("previous"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(t.TempDir(), "broken.json")
	if err := os.WriteFile(broken, []byte(`{"name":`), 0o644); err != nil {
		t.Fatal(err)
	}
	for list, want := range map[string]string{
		broken:                                 "is not a valid conflist",
		writeConflist(t, "flannel", "portmap"): `names plugin "portmap"`,
	} {
		code, _, errOut := run("install", "--from", from, "--cni-bin-dir", bin, "--conflist", list, "--cni-conf-dir", conf)
		if code != 1 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "nothing installed in "+conf) {
			t.Errorf("%s: exit %d, %s", list, code, errOut)
		}
		if data, _ := os.ReadFile(old); string(data) != "previous" || len(entries(t, conf)) != 1 {
			t.Errorf("%s: the node's conflist changed: %q, %v", list, data, entries(t, conf))
		}
	}
}

func TestInstallUsage(t *testing.T) {
	from, _, _ := installDirs(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"install", "--from", from, "--cni-bin-dir", from}, 1, "--from and --cni-bin-dir are both"},
		{[]string{"install", "--from", from, "--cni-bin-dir", "/nonexistent"}, 1, "mount the node's CNI binary directory there"},
		{[]string{"install", "--name", "../x.conflist"}, 2, "a file name ending in .conflist"},
		{[]string{"install", "extra"}, 2, "install takes no operands"},
	} {
		if code, _, errOut := run(c.args...); code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, %s", c.args, code, errOut)
		}
	}
}
