package disk

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/netconf"
)

// victim is a directory outside the data dir whose files must survive
// whatever the store does: one named like an owner key, one like a
// temporary index file, one like a record, and a subdirectory.
func victim(t *testing.T) (dir string, check func()) {
	t.Helper()
	dir = t.TempDir()
	files := map[string]string{
		ownerKey(o1): `{"v":1,"id":"c1","addrs":[]}`, ".tmp-x": "tmp", "10.0.0.2": "c9\r\neth0", "sub/precious": "keep",
	}
	for name, content := range files {
		mustWrite(t, filepath.Join(dir, name), content)
	}
	return dir, func() {
		t.Helper()
		for name, content := range files {
			if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != content {
				t.Errorf("victim file %s: %q, %v; want %q untouched", name, got, err, content)
			}
		}
		if got := names(t, dir); got != ".tmp-x 10.0.0.2 "+ownerKey(o1)+" sub" {
			t.Errorf("victim directory now holds %q", got)
		}
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// logged opens net1 with a log the test reads.
func logged(t *testing.T, data string) (*Store, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	s, err := OpenLogged(data, "net1", slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &buf
}

// movedAside returns the path that what was at name in dir was moved to.
func movedAside(t *testing.T, dir, name string) string {
	t.Helper()
	var out []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+".stray-") {
			out = append(out, e.Name())
		}
	}
	if len(out) != 1 {
		t.Fatalf("%s: moved aside %q, want one %s.stray-*", dir, out, name)
	}
	return filepath.Join(dir, out[0])
}

// TestSymlinkedIndexNotFollowed: a symbolic link at .cnisuite or at
// .cnisuite/owners pointing elsewhere is moved aside, its target left
// untouched, by the next verb and by a GC's rebuild; the store keeps working.
func TestSymlinkedIndexNotFollowed(t *testing.T) {
	for _, at := range []string{metaName, metaName + "/" + ownersName} {
		for _, verb := range []string{"reserve", "rebuild"} {
			t.Run(at+" "+verb, func(t *testing.T) {
				data := t.TempDir()
				s := open(t, data)
				reserve(t, s, a1, ipam.Claim{Owner: o1, Netns: ns1})
				s.Close()
				target, check := victim(t)
				link := filepath.Join(s.Dir(), at)
				if err := os.RemoveAll(link); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, link); err != nil {
					t.Fatal(err)
				}
				s, log := logged(t, data)
				if verb == "reserve" {
					reserve(t, s, a2, ipam.Claim{Owner: o2})
				} else if err := s.Rebuild(); err != nil {
					t.Fatal(err)
				}
				s.Close()
				check()
				if got, err := os.Readlink(movedAside(t, filepath.Dir(link), filepath.Base(link))); err != nil || got != target {
					t.Errorf("the link moved aside points to %q (%v), want %s", got, err, target)
				}
				if !strings.Contains(log.String(), "moved aside") || !strings.Contains(log.String(), "was=\"a symbolic link\"") {
					t.Errorf("log: %s", log)
				}
				s = open(t, data)
				if got := byOwner(t, s, o1); got != a1.String() {
					t.Errorf("ByOwner(o1) = %q", got)
				}
				want := keys(o1)
				if verb == "reserve" {
					want = keys(o1, o2)
				}
				if got := ownerFiles(t, s); got != want {
					t.Errorf("index files %q, want %q", got, want)
				}
			})
		}
	}
}

// wrongKinds makes something that is not a regular file at path.
var wrongKinds = map[string]func(t *testing.T, path string){
	"directory": func(t *testing.T, path string) { mustWrite(t, filepath.Join(path, "inside"), "keep") },
	"fifo": func(t *testing.T, path string) {
		if err := unix.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
	},
	"symlink": func(t *testing.T, path string) {
		target := filepath.Join(t.TempDir(), "target")
		mustWrite(t, target, "c1\r\neth0")
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
	},
	"file": func(t *testing.T, path string) { mustWrite(t, path, "stray") },
}

// TestStrayAtIndexNames: whatever the store did not make at a name it keeps
// its index under (.cnisuite, owners, the stamp, an owner's entry) is moved
// aside with a warning; reserving and releasing keep working.
func TestStrayAtIndexNames(t *testing.T) {
	tests := []struct{ at, kind string }{
		{metaName, "file"}, {metaName, "fifo"},
		{metaName + "/" + ownersName, "file"}, {metaName + "/" + ownersName, "fifo"},
		{metaName + "/" + stampName, "directory"}, {metaName + "/" + stampName, "symlink"},
		{metaName + "/" + ownersName + "/" + ownerKey(o1), "directory"},
		{metaName + "/" + ownersName + "/" + ownerKey(o1), "symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.at+" "+tt.kind, func(t *testing.T) {
			data := t.TempDir()
			s := open(t, data)
			reserve(t, s, a2, ipam.Claim{Owner: o2})
			s.Close()
			path := filepath.Join(s.Dir(), tt.at)
			if err := os.RemoveAll(path); err != nil {
				t.Fatal(err)
			}
			os.Remove(filepath.Join(s.meta, stampName)) // as after a hand at work
			wrongKinds[tt.kind](t, path)
			s, log := logged(t, data)
			reserve(t, s, a1, ipam.Claim{Owner: o1, Netns: ns1})
			if got := byOwner(t, s, o1); got != a1.String() {
				t.Errorf("ByOwner(o1) = %q", got)
			}
			if rel, err := s.ReleaseByOwner(o2); err != nil || len(rel) != 1 {
				t.Errorf("ReleaseByOwner(o2) = %v, %v", rel, err)
			}
			s.Close()
			stray := movedAside(t, filepath.Dir(path), filepath.Base(path))
			kept := map[string]string{"file": stray, "directory": filepath.Join(stray, "inside")}
			if path, ok := kept[tt.kind]; ok {
				if got, err := os.ReadFile(path); err != nil || (string(got) != "stray" && string(got) != "keep") {
					t.Errorf("the %s moved aside lost its content: %q, %v", tt.kind, got, err)
				}
			}
			if !strings.Contains(log.String(), "moved aside") {
				t.Errorf("no warning logged: %s", log)
			}
			s = open(t, data)
			if got := netnsOf(t, s, a1); got != ns1 {
				t.Errorf("after reopening, the proof of %s is %+v", a1, got)
			}
		})
	}
}

// TestLockNotAFile: anything but a regular file at the lock's name stops
// Open with code 5 and a message saying what to do, at once (a FIFO is not
// opened), and is left where it is.
func TestLockNotAFile(t *testing.T) {
	for _, kind := range []string{"directory", "fifo", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			data := t.TempDir()
			path := filepath.Join(data, "net1", lockName)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			wrongKinds[kind](t, path)
			before, _ := os.Lstat(path)
			err := within(t, 5*time.Second, func() error {
				s, err := Open(data, "net1")
				if err == nil {
					s.Close()
				}
				return err
			})
			var ne *netconf.Error
			if !errors.As(err, &ne) || ne.Code != netconf.CodeIO || !strings.Contains(err.Error(), path+" is a") || !strings.Contains(err.Error(), "remove it by hand") {
				t.Fatalf("Open = %v, want code 5 naming %s and the fix", err, path)
			}
			if after, _ := os.Lstat(path); after == nil || after.Mode() != before.Mode() {
				t.Errorf("the %s at the lock's name was changed", kind)
			}
		})
	}
}

// within runs fn, failing the test when it takes longer than d.
func within(t *testing.T, d time.Duration, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("still running after %v", d)
		return nil
	}
}

// TestLastReservedNotAFile: the round-robin note is a hint; anything but a
// regular file there is ignored with a warning, never followed nor opened,
// and reserving still works.
func TestLastReservedNotAFile(t *testing.T) {
	for _, kind := range []string{"directory", "fifo", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			data := t.TempDir()
			path := filepath.Join(data, "net1", lastReservedPrefix+"0")
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			wrongKinds[kind](t, path)
			target, _ := os.Readlink(path)
			s, log := logged(t, data)
			var last netip.Addr
			err := within(t, 5*time.Second, func() (err error) { last, err = s.LastReserved(0); return err })
			if last.IsValid() || err != nil {
				t.Fatalf("LastReserved = %v, %v", last, err)
			}
			reserve(t, s, a1, c1)
			if !strings.Contains(log.String(), "ignoring host-local's round-robin note") {
				t.Errorf("no warning: %s", log)
			}
			if target != "" {
				if got, _ := os.ReadFile(target); string(got) != "c1\r\neth0" {
					t.Errorf("the link's target now holds %q", got)
				}
			}
		})
	}
}

// TestNotRecordsBlockTheirAddress: an entry named like an address that is
// not a regular file keeps that address from being handed out, is listed
// as such (ErrNotRecord), is never followed or opened, and nothing removes
// it: not Release, not a rebuild.
func TestNotRecordsBlockTheirAddress(t *testing.T) {
	for kind, make := range wrongKinds {
		if kind == "file" {
			continue
		}
		t.Run(kind, func(t *testing.T) {
			data := t.TempDir()
			path := filepath.Join(data, "net1", a1.String())
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			make(t, path) // a symbolic link to a file reading as c1/eth0's record
			s := open(t, data)
			if ok, err := s.Reserve(a1, ipam.Claim{Owner: o2}, 0); ok || err != nil {
				t.Fatalf("Reserve of the blocked address: %v %v", ok, err)
			}
			var res ipam.Reservation
			var found bool
			err := within(t, 5*time.Second, func() (err error) { res, found, err = s.Lookup(a1); return err })
			if err != nil || !found || !errors.Is(res.Corrupt, ErrNotRecord) || res.Owner != (ipam.Owner{}) {
				t.Fatalf("Lookup = %+v %v %v, want a blocked entry naming no owner", res, found, err)
			}
			if !strings.HasPrefix(res.Corrupt.Error(), "a ") || !strings.Contains(res.Corrupt.Error(), "remove it by hand") {
				t.Errorf("reason %q", res.Corrupt)
			}
			all, err := s.All()
			if err != nil || len(all) != 1 || !errors.Is(all[0].Corrupt, ErrNotRecord) {
				t.Fatalf("All = %+v, %v", all, err)
			}
			if got := byOwner(t, s, o1); got != "" {
				t.Errorf("ByOwner(c1) = %q: the link was followed", got)
			}
			if err := s.Release(a1); !errors.Is(err, ErrNotRecord) {
				t.Errorf("Release = %v, want ErrNotRecord", err)
			}
			if err := s.Rebuild(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(path); err != nil {
				t.Errorf("the %s at %s is gone: %v", kind, a1, err)
			}
		})
	}
}

// TestLockWaitBounded: a lock that is never let go (its holder stopped)
// makes Open fail after lockWait with code 11, naming the lock file and its
// holder; the waiter given up on does not keep the lock once the holder
// lets go.
func TestLockWaitBounded(t *testing.T) {
	defer func(d time.Duration) { lockWait = d }(lockWait)
	lockWait = 200 * time.Millisecond
	data := t.TempDir()
	open(t, data).Close()
	path := filepath.Join(data, "net1", lockName)
	holder, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Open(data, "net1")
	var ne *netconf.Error
	if !errors.As(err, &ne) || ne.Code != netconf.CodeTryAgainLater || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("Open with the lock held: %v, want code 11 naming %s and this process", err, path)
	}
	if took := time.Since(start); took < lockWait || took > lockWait+2*time.Second {
		t.Errorf("gave up after %v, want %v", took, lockWait)
	}
	holder.Close()
	lockWait = 5 * time.Second
	s, err := Open(data, "net1")
	if err != nil {
		t.Fatalf("Open once the holder let go: %v", err)
	}
	s.Close()
	// The waiter given up on got the lock and dropped it: nobody holds it.
	check, _ := os.Open(path)
	defer check.Close()
	deadline := time.Now().Add(5 * time.Second)
	for unix.Flock(int(check.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the lock is still held after every holder let go")
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReadsAreBounded: huge (sparse) files at the stamp's, an entry's, the
// note's and a record's names are read only up to their bounds.
func TestReadsAreBounded(t *testing.T) {
	data := t.TempDir()
	s := open(t, data)
	reserve(t, s, a1, c1)
	s.Close()
	for _, name := range []string{metaName + "/" + stampName, metaName + "/" + ownersName + "/" + ownerKey(o1), lastReservedPrefix + "0", a2.String()} {
		f, err := os.OpenFile(filepath.Join(s.Dir(), name), os.O_WRONLY|os.O_CREATE, 0o600)
		if err == nil {
			err = errors.Join(f.Truncate(64<<20), f.Close())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s = open(t, data)
	last, err := s.LastReserved(0)
	all, aerr := s.All()
	got := byOwner(t, s, o1)
	runtime.ReadMemStats(&after)
	if last.IsValid() || err != nil || aerr != nil || len(all) != 2 || got != a1.String() {
		t.Errorf("LastReserved = %v, %v; All = %+v, %v; ByOwner = %q", last, err, all, aerr, got)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Errorf("reading the store allocated %d MB", n>>20)
	}
}

// TestOperatorLinksFollowed: the data dir and the network directory may be
// symbolic links an operator made (/var/lib/cni -> /data/cni): the records
// go where they point.
func TestOperatorLinksFollowed(t *testing.T) {
	real, links := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(real, "net1-data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(links, "data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("net1-data", filepath.Join(real, "net1")); err != nil {
		t.Fatal(err)
	}
	s := open(t, filepath.Join(links, "data"))
	reserve(t, s, a1, c1)
	s.Close()
	if got, err := os.ReadFile(filepath.Join(real, "net1-data", a1.String())); err != nil || string(got) != "c1\r\neth0" {
		t.Fatalf("record through the operator's links: %q, %v", got, err)
	}
}
