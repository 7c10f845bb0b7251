package disk

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
)

// openToReserve opens net1 in a new data directory with n records of o1
// prepared, and checks the files Close leaves: want, space-separated.
func openToReserve(t *testing.T, n int, want string) *Store {
	t.Helper()
	data := t.TempDir()
	s, err := OpenToReserve(data, "net1", nil, o1, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if got := names(t, filepath.Join(data, "net1")); got != want {
			t.Errorf("files after Close: %q, want %q", got, want)
		}
	})
	return s
}

func checkRecords(t *testing.T, s *Store, want map[string]string) {
	t.Helper()
	for name, content := range want {
		got, err := os.ReadFile(filepath.Join(s.Dir(), name))
		if err != nil || string(got) != content {
			t.Errorf("%s: %q %v, want %q", name, got, err, content)
		}
	}
}

// The records Reserve links are the prepared ones, for their owner only,
// one per address; the one left unused goes without a trace.
func TestPreparedRecordsAreLinked(t *testing.T) {
	s := openToReserve(t, 3, ".cnisuite 10.0.0.2 10.0.0.3 fd00::2 last_reserved_ip.0 lock")
	o2 := ipam.Owner{ContainerID: "c2", IfName: "eth1"}
	reserve(t, s, netip.MustParseAddr("10.0.0.2"), c1)
	reserve(t, s, netip.MustParseAddr("fd00::2"), c1)
	reserve(t, s, netip.MustParseAddr("10.0.0.3"), ipam.Claim{Owner: o2})
	if s.prep.used != 2 {
		t.Errorf("%d prepared records linked, want 2 (the third address is another owner's)", s.prep.used)
	}
	checkRecords(t, s, map[string]string{"10.0.0.2": "c1\r\neth0", "fd00::2": "c1\r\neth0", "10.0.0.3": "c2\r\neth1"})
}

// A prepared record whose address turned out taken serves the next one.
func TestPreparedRecordSurvivesATakenAddress(t *testing.T) {
	s := openToReserve(t, 1, ".cnisuite 10.0.0.2 10.0.0.3 last_reserved_ip.0 lock")
	write(t, s, "10.0.0.2", "other\r\neth0")
	if ok, err := s.Reserve(a1, c1, 0); ok || err != nil {
		t.Fatalf("Reserve of a taken address: %v %v, want false", ok, err)
	}
	reserve(t, s, netip.MustParseAddr("10.0.0.3"), c1)
	if s.prep.used != 1 {
		t.Errorf("%d prepared records linked, want 1", s.prep.used)
	}
	checkRecords(t, s, map[string]string{"10.0.0.3": "c1\r\neth0"})
}

// Where an unnamed file cannot be linked (no /proc), Reserve writes its
// records as it does without preparation.
func TestPreparedRecordsWithoutProc(t *testing.T) {
	orig := fdDir
	fdDir = filepath.Join(t.TempDir(), "nofd") + "/"
	t.Cleanup(func() { fdDir = orig })
	s := openToReserve(t, 2, ".cnisuite 10.0.0.2 fd00::2 last_reserved_ip.0 lock")
	reserve(t, s, netip.MustParseAddr("10.0.0.2"), c1)
	reserve(t, s, netip.MustParseAddr("fd00::2"), c1)
	checkRecords(t, s, map[string]string{"10.0.0.2": "c1\r\neth0", "fd00::2": "c1\r\neth0"})
	if s.prep != nil {
		t.Error("the prepared records are kept after one could not be linked")
	}
	if e, err := s.entryOf(o1); err != nil || len(e.Addrs) != 2 {
		t.Fatalf("index entry %+v %v, want both addresses", e, err)
	}
}

// A store that fails to open leaves nothing of its prepared records.
func TestPreparedRecordsGoWithAFailedOpen(t *testing.T) {
	data := t.TempDir()
	dir := filepath.Join(data, "net1")
	if err := os.MkdirAll(filepath.Join(dir, lockName), 0o755); err != nil {
		t.Fatal(err) // a directory at the lock's name stops every verb
	}
	if _, err := OpenToReserve(data, "net1", nil, o1, 2, nil); err == nil {
		t.Fatal("opened with a directory at the lock's name")
	}
	if got, want := names(t, dir), "lock"; got != want {
		t.Fatalf("files %q, want %q", got, want)
	}
}

// A new owner's index entry is the empty file made before the lock, written
// and linked under it: no file is created under the lock.
func TestPreparedIndexEntryIsLinked(t *testing.T) {
	s := openToReserve(t, 1, ".cnisuite 10.0.0.2 last_reserved_ip.0 lock")
	var prepared unix.Stat_t
	if err := unix.Fstat(int(s.prep.entry.Fd()), &prepared); err != nil {
		t.Fatal(err)
	}
	reserve(t, s, netip.MustParseAddr("10.0.0.2"), c1)
	var linked unix.Stat_t
	if err := unix.Stat(filepath.Join(s.meta, ownersName, ownerKey(o1)), &linked); err != nil {
		t.Fatal(err)
	}
	if linked.Ino != prepared.Ino {
		t.Errorf("the index entry is inode %d, not the prepared %d", linked.Ino, prepared.Ino)
	}
	if s.prep.entry != nil {
		t.Error("the prepared entry file is kept after its use")
	}
	delete(s.entries, ownerKey(o1)) // read it back from its file
	if e, err := s.entryOf(o1); err != nil || e == nil || len(e.Addrs) != 1 || e.Addrs[0].IP != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("index entry %+v %v, want 10.0.0.2", e, err)
	}
}

// An owner that has an entry gets it rewritten in place; the prepared file
// goes unused and without a trace.
func TestPreparedIndexEntryUnusedForAnExistingOne(t *testing.T) {
	s := openToReserve(t, 0, ".cnisuite 10.0.0.2 10.0.0.3 last_reserved_ip.0 lock")
	reserve(t, s, netip.MustParseAddr("10.0.0.2"), c1)
	s.prep = prepare(s.netDir, o1, 0)
	reserve(t, s, netip.MustParseAddr("10.0.0.3"), c1)
	if s.prep.entry == nil {
		t.Error("the prepared entry file was used over an existing entry")
	}
	if e, err := s.entryOf(o1); err != nil || len(e.Addrs) != 2 {
		t.Fatalf("index entry %+v %v, want both addresses", e, err)
	}
}

// A reservation begun early hands its directory and record to the store of
// the same network and owner, which prepares only the rest.
func TestEarlyRecordIsTakenOver(t *testing.T) {
	data := t.TempDir()
	if err := os.Mkdir(filepath.Join(data, "net1"), 0o755); err != nil {
		t.Fatal(err)
	}
	e := BeginReserve(data, "net1", o1)
	if e == nil {
		t.Fatal("no early reservation in an existing network directory")
	}
	early := e.prep
	s, err := OpenToReserve(data, "net1", nil, o1, 2, e)
	if err != nil {
		t.Fatal(err)
	}
	e.Discard() // after the take-over: must leave the store's records alone
	if s.prep != early {
		t.Fatal("the store prepared its own records instead of taking the early one")
	}
	reserve(t, s, netip.MustParseAddr("10.0.0.2"), c1)
	reserve(t, s, netip.MustParseAddr("fd00::2"), c1)
	if s.prep.used != 2 {
		t.Errorf("%d prepared records linked, want 2", s.prep.used)
	}
	checkRecords(t, s, map[string]string{"10.0.0.2": "c1\r\neth0", "fd00::2": "c1\r\neth0"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, filepath.Join(data, "net1")), ".cnisuite 10.0.0.2 fd00::2 last_reserved_ip.0 lock"; got != want {
		t.Errorf("files %q, want %q", got, want)
	}
}

// An early reservation creates no network directory, and leaves nothing
// when its verb stops before the store (an invalid configuration) or opens
// another network's.
func TestEarlyRecordLeavesNothing(t *testing.T) {
	data := t.TempDir()
	if e := BeginReserve(data, "net1", o1); e != nil {
		e.Discard()
		t.Fatal("an early reservation without the network's directory")
	}
	if got := names(t, data); got != "" {
		t.Fatalf("files %q in the data directory, want none", got)
	}
	dir := filepath.Join(data, "net1")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	BeginReserve(data, "net1", o1).Discard()
	s, err := OpenToReserve(data, "net2", nil, o1, 1, BeginReserve(data, "net1", o1))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, dir); got != "" {
		t.Errorf("files %q in net1, want none", got)
	}
}
