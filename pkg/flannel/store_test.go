package flannel

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
)

func TestStoreSaveLoad(t *testing.T) {
	st := store{filepath.Join(t.TempDir(), "flannel")}
	if _, _, err := st.load("c1", "eth0"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("load before save: %v", err)
	}
	for _, data := range []string{`{"name":"a"}`, `{"name":"b"}`} { // the second replaces the first
		if err := st.save("c1", "eth0", []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	data, path, err := st.load("c1", "eth0")
	if err != nil || string(data) != `{"name":"b"}` || path != filepath.Join(st.dir, "c1-eth0") {
		t.Fatalf("load = %s %s %v", data, path, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("saved with mode %v, want 0600", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(st.dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dataDir mode %v, want 0700", fi.Mode().Perm())
	}
	if names := dirList(t, st.dir); !slices.Equal(names, []string{"c1-eth0"}) {
		t.Errorf("dataDir holds %v: a temporary file stayed", names)
	}
	if err := st.remove(path); err != nil {
		t.Fatal(err)
	}
	if err := st.remove(path); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
}

// TestStoreLoadsFlannelsName: an attachment made by flannel's plugin (file
// named by container ID only) is found, and the suite's own name first.
func TestStoreLoadsFlannelsName(t *testing.T) {
	st := store{t.TempDir()}
	writeFile(t, filepath.Join(st.dir, "c1"), `{"name":"legacy"}`)
	data, path, err := st.load("c1", "eth0")
	if err != nil || string(data) != `{"name":"legacy"}` || path != filepath.Join(st.dir, "c1") {
		t.Fatalf("legacy load = %s %s %v", data, path, err)
	}
	writeFile(t, filepath.Join(st.dir, "c1-eth0"), `{"name":"ours"}`)
	if data, _, _ := st.load("c1", "eth0"); string(data) != `{"name":"ours"}` {
		t.Fatalf("load preferred %s", data)
	}
}

func TestStoreSaveFailsWithCode5(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "file"), "")
	err := store{filepath.Join(dir, "file", "sub")}.save("c1", "eth0", []byte("{}"))
	if codeOf(err) != netconf.CodeIO {
		t.Fatalf("err = %v, want code 5", err)
	}
}

func TestStorePrune(t *testing.T) {
	st := store{t.TempDir()}
	files := map[string]string{
		"keep-eth0":    `{"name":"cbr0"}`,  // valid attachment
		"keep":         `{"name":"cbr0"}`,  // valid, flannel's name
		"gone-eth0":    `{"name":"cbr0"}`,  // invalid: removed
		"gone":         `{"name":"cbr0"}`,  // invalid, flannel's name: removed
		"keep-eth1":    `{"name":"cbr0"}`,  // same container, other interface: removed
		"other-eth0":   `{"name":"other"}`, // another network's: kept
		"corrupt-eth0": `{"name":`,         // unreadable: removed
		".x-eth0.123":  `{"name":"cbr0"}`,  // a dead writer's: removed
		".y-eth0.456":  `{"name":"cbr0"}`,  // being written: kept
	}
	for name, content := range files {
		writeFile(t, filepath.Join(st.dir, name), content)
	}
	old := time.Now().Add(-2 * regfile.StaleTemp)
	if err := os.Chtimes(filepath.Join(st.dir, ".x-eth0.123"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(st.dir, "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	removed, err := st.prune("cbr0", []netconf.Attachment{{ContainerID: "keep", IfName: "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{".x-eth0.123", "corrupt-eth0", "gone", "gone-eth0", "keep-eth1"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if got, want := dirList(t, st.dir), []string{".y-eth0.456", "keep", "keep-eth0", "other-eth0", "subdir"}; !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	if removed, err := (store{filepath.Join(st.dir, "none")}).prune("cbr0", nil); err != nil || removed != nil {
		t.Errorf("prune of a missing dataDir = %v, %v", removed, err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func dirList(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestStoreForget: an attachment's DEL removes its saved configuration and
// the temporary files a save killed midway left, and nothing of another
// attachment (whose name the first's is a prefix of).
func TestStoreForget(t *testing.T) {
	st := store{filepath.Join(t.TempDir(), "flannel")}
	for _, a := range [][2]string{{"c1", "eth0"}, {"c1", "eth0x"}, {"c2", "eth0"}} {
		if err := st.save(a[0], a[1], []byte(`{"name":"n"}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, leftover := range []string{".c1-eth0.123", ".c1-eth0.456", ".c1-eth0x.1", ".c2-eth0.1"} {
		if err := os.WriteFile(filepath.Join(st.dir, leftover), []byte(`{"na`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.forget("c1", "eth0", filepath.Join(st.dir, "c1-eth0")); err != nil {
		t.Fatal(err)
	}
	if err := st.forget("c3", "eth0", ""); err != nil { // nothing saved, nothing left: success
		t.Fatal(err)
	}
	want := []string{".c1-eth0x.1", ".c2-eth0.1", "c1-eth0x", "c2-eth0"}
	if names := dirList(t, st.dir); !slices.Equal(names, want) {
		t.Errorf("dataDir holds %v, want %v", names, want)
	}
}
