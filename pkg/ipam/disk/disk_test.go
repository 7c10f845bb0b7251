package disk

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
)

func open(t *testing.T, dataDir string) *Store {
	t.Helper()
	s, err := Open(dataDir, "net1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var (
	a1 = netip.MustParseAddr("10.0.0.2")
	a2 = netip.MustParseAddr("10.0.0.3")
	a6 = netip.MustParseAddr("fd00::2")
	o1 = ipam.Owner{ContainerID: "c1", IfName: "eth0"}
	c1 = ipam.Claim{Owner: o1}
)

func TestLayoutAndModes(t *testing.T) {
	data := filepath.Join(t.TempDir(), "networks")
	s := open(t, data)
	for _, a := range []netip.Addr{a1, a6} {
		if ok, err := s.Reserve(a, c1, 1); !ok || err != nil {
			t.Fatalf("Reserve %s: %v %v", a, ok, err)
		}
	}
	checks := []struct {
		name, content string
		mode          os.FileMode
	}{
		{"10.0.0.2", "c1\r\neth0", 0o600},
		{"fd00::2", "c1\r\neth0", 0o600},
		{"last_reserved_ip.1", "fd00::2", 0o600},
		{"lock", "", 0o600},
	}
	for _, c := range checks {
		p := filepath.Join(data, "net1", c.name)
		got, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(got) != c.content || fi.Mode().Perm() != c.mode {
			t.Errorf("%s: %q %v mode %v; want %q %v", c.name, got, err, fi.Mode().Perm(), c.content, c.mode)
		}
	}
	for _, d := range []string{data, filepath.Join(data, "net1")} {
		if fi, _ := os.Stat(d); fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, want 0755", d, fi.Mode().Perm())
		}
	}
	if got, want := names(t, filepath.Join(data, "net1")), ".cnisuite 10.0.0.2 fd00::2 last_reserved_ip.1 lock"; got != want {
		t.Errorf("files %q, want %q", got, want)
	}
	s.Close()
	if got, want := names(t, filepath.Join(data, "net1", ".cnisuite")), "index owners"; got != want {
		t.Errorf("index files %q, want %q", got, want)
	}
	if got, want := names(t, filepath.Join(data, "net1", ".cnisuite", "owners")), ownerKey(o1); got != want {
		t.Errorf("owner files %q, want %q", got, want)
	}
}

// names lists a directory, sorted, as one string.
func names(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestReserveNeverOverwrites(t *testing.T) {
	s := open(t, t.TempDir())
	if ok, _ := s.Reserve(a1, c1, 0); !ok {
		t.Fatal("first reserve failed")
	}
	ok, err := s.Reserve(a1, ipam.Claim{Owner: ipam.Owner{ContainerID: "c2", IfName: "eth0"}}, 0)
	if ok || err != nil {
		t.Fatalf("second reserve: %v %v", ok, err)
	}
	res, found, err := s.Lookup(a1)
	if !found || err != nil || res.Owner != o1 {
		t.Fatalf("Lookup after a refused reserve: %+v %v %v", res, found, err)
	}
	if last, _ := s.LastReserved(0); last != a1 {
		t.Fatalf("a refused reserve moved the note to %s", last)
	}
}

func TestLastReserved(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	tests := []struct {
		content string // "" = no file
		want    netip.Addr
	}{
		{"", netip.Addr{}},
		{"10.0.0.3", a2},
		{"10.0.0.3\n", a2}, // hand-edited
		{"garbage", netip.Addr{}},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, "net1", "last_reserved_ip.0")
		os.Remove(p)
		if tt.content != "" {
			os.WriteFile(p, []byte(tt.content), 0o600)
		}
		if got, err := s.LastReserved(0); got != tt.want || err != nil {
			t.Errorf("%q: got %v, %v", tt.content, got, err)
		}
	}
}

// write puts a record in place the way the reference (or a hand) would.
func write(t *testing.T, s *Store, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.Dir(), name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reopen closes s and opens its network again, as the next verb would: a
// change made by hand while s was open is seen then.
func reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	s.Close()
	return open(t, filepath.Dir(s.Dir()))
}

func TestAllSkipsNonRecords(t *testing.T) {
	s := open(t, t.TempDir())
	write(t, s, "10.0.0.2", "c1\r\neth0")
	write(t, s, "10.0.0.3", "c2") // legacy
	write(t, s, "10.0.0.4", "")   // empty: corrupt
	write(t, s, "last_reserved_ip.0", "10.0.0.4")
	write(t, s, ".reserve-123", "c9\r\neth0")
	write(t, s, "FD00::9", "c3\r\neth0")                // not the canonical spelling: not ours
	os.Mkdir(filepath.Join(s.Dir(), "10.0.0.9"), 0o755) // not a record, but it blocks the address
	all, err := s.All()
	if err != nil || len(all) != 4 {
		t.Fatalf("All = %+v, %v", all, err)
	}
	slices.SortFunc(all, func(a, b ipam.Reservation) int { return a.Addr.Compare(b.Addr) })
	if all[0].Owner != o1 || all[1].Owner != (ipam.Owner{ContainerID: "c2"}) || !errors.Is(all[2].Corrupt, ErrCorrupt) {
		t.Fatalf("All = %+v", all)
	}
	if !errors.Is(all[3].Corrupt, ErrNotRecord) || errors.Is(all[3].Corrupt, ErrCorrupt) || all[3].Addr.String() != "10.0.0.9" {
		t.Fatalf("the directory at 10.0.0.9: %+v", all[3])
	}
}

func TestReleaseByOwner(t *testing.T) {
	tests := []struct {
		name    string
		records map[string]string
		owner   ipam.Owner
		want    []string // released
	}{
		{"exact", map[string]string{"10.0.0.2": "c1\r\neth0", "fd00::2": "c1\r\neth0", "10.0.0.3": "c1\r\neth1"}, o1, []string{"10.0.0.2", "fd00::2"}},
		{"legacy when no exact", map[string]string{"10.0.0.2": "c1", "10.0.0.3": "c2\r\neth0"}, o1, []string{"10.0.0.2"}},
		{"legacy kept when exact exists", map[string]string{"10.0.0.2": "c1", "10.0.0.3": "c1\r\neth0"}, o1, []string{"10.0.0.3"}},
		{"trailing newline", map[string]string{"10.0.0.2": "c1\r\neth0\n"}, o1, []string{"10.0.0.2"}},
		{"nothing", map[string]string{"10.0.0.2": "c2\r\neth0"}, o1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, t.TempDir())
			for n, c := range tt.records {
				write(t, s, n, c)
			}
			s = reopen(t, s)
			got, err := s.ReleaseByOwner(tt.owner)
			if err != nil {
				t.Fatal(err)
			}
			var gs []string
			for _, a := range got {
				gs = append(gs, a.String())
			}
			slices.Sort(gs)
			if strings.Join(gs, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("released %v, want %v", gs, tt.want)
			}
			for _, n := range gs {
				if _, err := os.Stat(filepath.Join(s.Dir(), n)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still on disk", n)
				}
			}
			if left, _ := s.All(); len(left) != len(tt.records)-len(tt.want) {
				t.Errorf("left %v", left)
			}
		})
	}
}

func TestByOwnerAndRelease(t *testing.T) {
	s := open(t, t.TempDir())
	write(t, s, "10.0.0.2", "c1\r\neth0")
	write(t, s, "10.0.0.3", "c1")
	write(t, s, "10.0.0.4", "c1\r\neth1")
	s = reopen(t, s)
	got, err := s.ByOwner(o1)
	if err != nil || len(got) != 2 {
		t.Fatalf("ByOwner = %v, %v", got, err)
	}
	if err := s.Release(a1); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(a1); err != nil {
		t.Fatalf("releasing a free address: %v", err)
	}
}

func TestRemoveStale(t *testing.T) {
	s := open(t, t.TempDir())
	write(t, s, ".reserve-1", "c1\r\neth0")
	write(t, s, ".reserve-2", "10.0.0.3") // the round-robin note's, by replaceAt
	write(t, s, "10.0.0.2", "c1\r\neth0")
	write(t, s, ".cnisuite/.tmp-1", "{}")
	write(t, s, ".cnisuite/owners/.tmp-2", "{}")
	if err := s.RemoveStale(); err != nil {
		t.Fatal(err)
	}
	got := names(t, s.Dir()) + "; " + names(t, s.meta) + "; " + names(t, filepath.Join(s.meta, ownersName))
	if want := ".cnisuite 10.0.0.2 lock; index owners; "; got != want { // the stamp emptied: a change
		t.Fatalf("after RemoveStale: %q, want %q", got, want)
	}
}

func TestOpenRefusesPathNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", "../x", "a\x00"} {
		if s, err := Open(t.TempDir(), name); err == nil {
			s.Close()
			t.Errorf("Open accepted network name %q", name)
		}
	}
}

func TestOpenUnusableDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Open(file, "net1"); err == nil {
		t.Fatal("Open under a regular file succeeded")
	}
}

func TestParseRecord(t *testing.T) {
	tests := []struct {
		in      string
		want    ipam.Owner
		corrupt bool
	}{
		{"c1\r\neth0", o1, false},
		{"c1", ipam.Owner{ContainerID: "c1"}, false},
		{" c1\r\neth0 \n", o1, false},
		{"c1\r\n", ipam.Owner{ContainerID: "c1"}, false},
		{"", ipam.Owner{}, true},
		{"\r\n", ipam.Owner{}, true},
		{" \n", ipam.Owner{}, true},
		{"c1\neth0", ipam.Owner{}, true},
		{"c1\r\neth0\r\nmore", ipam.Owner{}, true},
		{"c1\x00", ipam.Owner{}, true},
		{strings.Repeat("c", maxRecord+1), ipam.Owner{}, true},
	}
	for _, tt := range tests {
		got, err := ParseRecord([]byte(tt.in))
		if tt.corrupt != (err != nil) || got != tt.want {
			t.Errorf("ParseRecord(%q) = %+v, %v", tt.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Errorf("ParseRecord(%q): error %v does not wrap ErrCorrupt", tt.in, err)
		}
		if empty := strings.TrimSpace(tt.in) == ""; errors.Is(err, ipam.ErrEmptyRecord) != empty {
			t.Errorf("ParseRecord(%q): %v; want ErrEmptyRecord exactly for white space", tt.in, err)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte("c1\r\neth0"))
	f.Add([]byte("legacy"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte(strings.Repeat("c", maxRecord-1))) // an ID-only record whose rewrite would not fit
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := ParseRecord(data)
		if err != nil {
			return
		}
		if o.ContainerID == "" {
			t.Fatal("accepted a record without a container ID")
		}
		// What we write must read back the same.
		if back, err := ParseRecord(FormatRecord(o)); err != nil || back != o {
			t.Fatalf("round trip of %+v: %+v, %v", o, back, err)
		}
	})
}

// TestTempNamesAreRemovable: every name the store creates in its
// directories, but for those it keeps, starts with the prefix RemoveStale
// removes there, so that a verb killed before its rename leaves nothing
// behind for good (the round-robin note's first write once used the index's
// prefix in the network directory).
func TestTempNamesAreRemovable(t *testing.T) {
	s := open(t, t.TempDir())
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	type watched struct {
		path, prefix string
		kept         func(string) bool // the names the store keeps there
	}
	dirs := map[int]watched{}
	for _, d := range []watched{
		{s.Dir(), tmpPrefix, func(n string) bool { return n == a1.String() || strings.HasPrefix(n, lastReservedPrefix) }},
		{s.meta, indexTmpPrefix, func(n string) bool { return n == stampName }},
		{filepath.Join(s.meta, ownersName), indexTmpPrefix, func(n string) bool { return n == ownerKey(o1) }},
	} {
		wd, err := unix.InotifyAddWatch(fd, d.path, unix.IN_CREATE|unix.IN_MOVED_TO)
		if err != nil {
			t.Fatal(err)
		}
		dirs[wd] = d
	}
	if ok, err := s.Reserve(a1, c1, 0); !ok || err != nil {
		t.Fatalf("Reserve: %v %v", ok, err)
	}
	if _, err := s.ReleaseByOwner(o1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	buf := make([]byte, 64<<10)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
		off += unix.SizeofInotifyEvent + int(ev.Len)
		d := dirs[int(ev.Wd)]
		if ev.Mask&unix.IN_CREATE != 0 && !d.kept(name) {
			seen++
			if !strings.HasPrefix(name, d.prefix) {
				t.Errorf("%s: created %q, which RemoveStale (prefix %q) would never remove", d.path, name, d.prefix)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no temporary file seen: the round-robin note and the stamp are written by rename when new")
	}
}
