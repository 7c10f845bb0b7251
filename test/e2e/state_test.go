package e2e

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// reservations lists the addresses host-local holds for a network: the files
// of <dataDir>/<network> other than its lock, round-robin markers and
// dot-names (its index, .cnisuite/, and files being written).
func reservations(t *testing.T, dataDir, network string) []string {
	t.Helper()
	var out []string
	for _, name := range dirNames(t, filepath.Join(dataDir, network)) {
		if name != "lock" && !strings.HasPrefix(name, "last_reserved_ip") && !strings.HasPrefix(name, ".") {
			out = append(out, name)
		}
	}
	return out
}

// dirNames lists a directory; one that does not exist is empty.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}
