package regfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	link := func(name, target string) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	small, exact, over := write("small", "abc"), write("exact", "0123456789"), write("over", "0123456789x")
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sparse := filepath.Join(dir, "sparse")
	if f, err := os.Create(sparse); err != nil || f.Truncate(1<<40) != nil || f.Close() != nil {
		t.Fatalf("making a 1 TiB sparse file: %v", err)
	}
	tests := []struct {
		name, path string
		links      Links
		want       string // content, when no error
		err        error
	}{
		{"small", small, Follow, "abc", nil},
		{"exactly the bound", exact, NoFollow, "0123456789", nil},
		{"one byte over", over, Follow, "", ErrTooLarge},
		{"1 TiB, read no further than the bound", sparse, Follow, "", ErrTooLarge},
		{"directory", dir, Follow, "", ErrNotRegular},
		{"FIFO without writer", fifo, Follow, "", ErrNotRegular},
		{"/dev/zero", "/dev/zero", Follow, "", ErrNotRegular},
		{"symlink followed", link("tosmall", small), Follow, "abc", nil},
		{"symlink refused", link("tosmall2", small), NoFollow, "", ErrNotRegular},
		{"symlink to a device", link("tozero", "/dev/zero"), Follow, "", ErrNotRegular},
		{"symlink to a FIFO", link("tofifo", fifo), Follow, "", ErrNotRegular},
		{"missing", filepath.Join(dir, "missing"), Follow, "", fs.ErrNotExist},
		{"dangling symlink", link("dangling", filepath.Join(dir, "missing")), Follow, "", fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			data, info, err := Read(tt.path, 10, tt.links)
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %v", took)
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) || data != nil {
					t.Fatalf("Read = %q, %v; want %v", data, err, tt.err)
				}
				return
			}
			if err != nil || string(data) != tt.want || !info.Mode().IsRegular() {
				t.Fatalf("Read = %q, %v, %v; want %q", data, info, err, tt.want)
			}
		})
	}
}

func TestKind(t *testing.T) {
	for m, want := range map[fs.FileMode]string{
		0o644: "a regular file", fs.ModeDir: "a directory", fs.ModeSymlink: "a symlink", fs.ModeNamedPipe: "a FIFO",
		fs.ModeSocket: "a socket", fs.ModeDevice | fs.ModeCharDevice: "a character device", fs.ModeDevice: "a block device",
	} {
		if got := Kind(m); got != want {
			t.Errorf("Kind(%v) = %q, want %q", m, got, want)
		}
	}
}

// FuzzRead: a file is returned whole when it fits the bound and refused
// with ErrTooLarge when it does not.
func FuzzRead(f *testing.F) {
	f.Add([]byte("FLANNEL_MTU=1450\n"), int64(16))
	f.Add([]byte{}, int64(0))
	f.Add(bytes.Repeat([]byte{' '}, 100), int64(99))
	f.Fuzz(func(t *testing.T, data []byte, max int64) {
		if max < 0 || max > 1<<20 {
			return
		}
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, _, err := Read(path, max, NoFollow)
		switch {
		case int64(len(data)) <= max && (err != nil || !bytes.Equal(got, data)):
			t.Fatalf("%d bytes, bound %d: %q, %v", len(data), max, got, err)
		case int64(len(data)) > max && !errors.Is(err, ErrTooLarge):
			t.Fatalf("%d bytes, bound %d: %v, want ErrTooLarge", len(data), max, err)
		}
	})
}

// TestReplace: the new content and mode replace the old file, and the
// directory holds nothing else after; synced or not.
func TestReplace(t *testing.T) {
	for name, replace := range map[string]func(string, []byte, fs.FileMode) error{"Replace": Replace, "ReplaceUnsynced": ReplaceUnsynced} {
		dir := t.TempDir()
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := replace(path, []byte("new"), 0o755); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		data, _ := os.ReadFile(path)
		if err != nil || st.Mode().Perm() != 0o755 || string(data) != "new" {
			t.Errorf("%s %s: %v %q %v", name, path, st.Mode(), data, err)
		}
		if des, _ := os.ReadDir(dir); len(des) != 1 {
			t.Errorf("%s: %s holds %d entries", name, dir, len(des))
		}
		if err := replace(filepath.Join(dir, "missing", "f"), nil, 0o644); err == nil {
			t.Errorf("%s: written into a directory that does not exist", name)
		}
	}
}
