package disk

import (
	"bytes"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
)

var (
	o2  = ipam.Owner{ContainerID: "c2", IfName: "eth0"}
	o3  = ipam.Owner{ContainerID: "c3", IfName: "eth0"}
	a3  = netip.MustParseAddr("10.0.0.4")
	ns1 = ipam.Netns{Path: "/run/netns/p1", Dev: 4, Ino: 4026532001, ID: 67312}
)

func reserve(t *testing.T, s *Store, a netip.Addr, c ipam.Claim) {
	t.Helper()
	if ok, err := s.Reserve(a, c, 0); !ok || err != nil {
		t.Fatalf("Reserve %s for %s: %v %v", a, c.Owner, ok, err)
	}
}

func byOwner(t *testing.T, s *Store, o ipam.Owner) string {
	t.Helper()
	got, err := s.ByOwner(o)
	if err != nil {
		t.Fatalf("ByOwner %s: %v", o, err)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	var out []string
	for _, a := range got {
		out = append(out, a.String())
	}
	return strings.Join(out, " ")
}

// netnsOf returns what Inspect says about addr's owner's namespace.
func netnsOf(t *testing.T, s *Store, a netip.Addr) ipam.Netns {
	t.Helper()
	all, err := s.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		if r.Addr == a {
			return r.Netns
		}
	}
	t.Fatalf("%s is not reserved", a)
	return ipam.Netns{}
}

// ownerFiles lists the index's attachment files.
func ownerFiles(t *testing.T, s *Store) string {
	t.Helper()
	return names(t, filepath.Join(s.meta, ownersName))
}

func keys(os ...ipam.Owner) string {
	var out []string
	for _, o := range os {
		out = append(out, ownerKey(o))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestIndexFollowsTheReference: the node ran the reference plugin for a
// while (it released one of our records, reserved the address again for
// someone else and, as old versions did, wrote a legacy record): the next
// Open sees the directory changed, rebuilds, and answers from the records,
// never lending our namespace proof to the foreign record.
func TestIndexFollowsTheReference(t *testing.T) {
	s := open(t, t.TempDir())
	reserve(t, s, a1, ipam.Claim{Owner: o1, Netns: ns1})
	reserve(t, s, a2, ipam.Claim{Owner: o2, Netns: ns1})
	s = reopen(t, s)
	if got := netnsOf(t, s, a1); got != ns1 {
		t.Fatalf("Inspect of our record: %+v, want %+v", got, ns1)
	}
	s.Close()
	os.Remove(filepath.Join(s.Dir(), a1.String()))
	write(t, s, a1.String(), "c3\r\neth0")
	write(t, s, a3.String(), "c1")
	s = open(t, filepath.Dir(s.Dir()))
	if got := byOwner(t, s, o1); got != a3.String() {
		t.Errorf("ByOwner(c1/eth0) = %q, want the legacy %s", got, a3)
	}
	if got := byOwner(t, s, o3); got != a1.String() {
		t.Errorf("ByOwner(c3) = %q, want %s", got, a1)
	}
	if got := netnsOf(t, s, a1); got != (ipam.Netns{}) {
		t.Errorf("the reference's record of %s inherited our proof %+v", a1, got)
	}
	if got := netnsOf(t, s, a2); got != ns1 {
		t.Errorf("our untouched record lost its proof: %+v", got)
	}
	if got, want := ownerFiles(t, s), keys(o2, o3, ipam.Owner{ContainerID: "c1"}); got != want {
		t.Errorf("index files %q, want %q", got, want)
	}
	if rel, err := s.ReleaseByOwner(o3); err != nil || len(rel) != 1 || rel[0] != a1 {
		t.Fatalf("ReleaseByOwner(c3) = %v, %v", rel, err)
	}
}

// TestKilledVerbRebuilds: a verb killed after writing an index entry but
// before linking its record leaves an empty stamp; the next Open drops the entry
// and the temporary record, and keeps the proof of the record that was
// completed.
func TestKilledVerbRebuilds(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	reserve(t, s, a1, ipam.Claim{Owner: o1, Netns: ns1})
	orphan := (*entry)(nil).with(o2, held{IP: a2, Rec: 99, Netns: "/run/netns/p2", NsIno: 7})
	if err := replaceAt(s.ownersDir, indexTmpPrefix, ownerKey(o2), formatEntry(orphan)); err != nil {
		t.Fatal(err)
	}
	write(t, s, ".reserve-77", "c2\r\neth0") // the record it was writing
	s.closeFiles()                           // killed: Close never ran
	if got, err := os.ReadFile(filepath.Join(s.meta, stampName)); err != nil || len(got) != 0 {
		t.Fatalf("the stamp survived a change without Close: %q %v", got, err)
	}
	s = open(t, dir)
	if got, want := names(t, s.Dir()), ".cnisuite 10.0.0.2 last_reserved_ip.0 lock"; got != want {
		t.Errorf("after the rebuild %q, want %q (the killed writer's file removed)", got, want)
	}
	if got := byOwner(t, s, o2); got != "" {
		t.Errorf("ByOwner of the orphan entry = %q", got)
	}
	if got, want := ownerFiles(t, s), keys(o1); got != want {
		t.Errorf("index files %q, want %q", got, want)
	}
	if got := netnsOf(t, s, a1); got != ns1 {
		t.Errorf("proof of the completed record lost: %+v", got)
	}
}

// TestInPlaceEditCaught: a record rewritten in place (the directory does
// not change, so the stamp still matches) is caught when the index is used.
func TestInPlaceEditCaught(t *testing.T) {
	s := open(t, t.TempDir())
	reserve(t, s, a1, ipam.Claim{Owner: o1, Netns: ns1})
	s.Close()
	if err := os.WriteFile(filepath.Join(s.Dir(), a1.String()), []byte("c2\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = open(t, filepath.Dir(s.Dir()))
	if got := byOwner(t, s, o1); got != "" {
		t.Errorf("ByOwner(c1) = %q after the record was given to c2", got)
	}
	if got := byOwner(t, s, o2); got != a1.String() {
		t.Errorf("ByOwner(c2) = %q, want %s", got, a1)
	}
	if got := netnsOf(t, s, a1); got != (ipam.Netns{}) {
		t.Errorf("c2 inherited c1's proof: %+v", got)
	}
}

// TestUnreadableEntryRebuilt: an index file garbled behind our back (the
// stamp still matching) is rebuilt when Reserve needs it, not an error.
func TestUnreadableEntryRebuilt(t *testing.T) {
	s := open(t, t.TempDir())
	reserve(t, s, a1, ipam.Claim{Owner: o1, Netns: ns1})
	s.Close()
	if err := os.WriteFile(filepath.Join(s.meta, ownersName, ownerKey(o1)), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = open(t, filepath.Dir(s.Dir()))
	reserve(t, s, a6, ipam.Claim{Owner: o1, Netns: ns1})
	if got := byOwner(t, s, o1); got != a1.String()+" "+a6.String() {
		t.Fatalf("ByOwner = %q after the rebuild", got)
	}
	if got := netnsOf(t, s, a1); got != (ipam.Netns{}) {
		t.Errorf("a proof survived its garbled entry: %+v", got)
	}
}

// TestIndexCleanAfterRelease: releasing every address leaves no index file
// but the stamp, and a refused Reserve leaves the index as it was.
func TestIndexCleanAfterRelease(t *testing.T) {
	s := open(t, t.TempDir())
	reserve(t, s, a1, ipam.Claim{Owner: o1, Netns: ns1})
	reserve(t, s, a6, ipam.Claim{Owner: o1, Netns: ns1})
	if ok, err := s.Reserve(a1, ipam.Claim{Owner: o2}, 0); ok || err != nil {
		t.Fatalf("Reserve of a taken address: %v %v", ok, err)
	}
	if got, want := ownerFiles(t, s), keys(o1); got != want {
		t.Fatalf("index files after a refused Reserve: %q, want %q", got, want)
	}
	if rel, err := s.ReleaseByOwner(o1); err != nil || len(rel) != 2 {
		t.Fatalf("ReleaseByOwner = %v, %v", rel, err)
	}
	s.Close()
	got := names(t, s.Dir()) + "; " + names(t, s.meta) + "; " + ownerFiles(t, s)
	if want := ".cnisuite last_reserved_ip.0 lock; index owners; "; got != want {
		t.Fatalf("after release: %q, want %q", got, want)
	}
}

// TestReferenceNeverMatchesTheIndex: the reference plugin compares the
// trimmed content of every file under the network directory with
// "ID\r\nifname" and "ID"; no file of the index may ever equal either.
func TestReferenceNeverMatchesTheIndex(t *testing.T) {
	s := open(t, t.TempDir())
	reserve(t, s, a1, ipam.Claim{Owner: o1, Netns: ns1})
	reserve(t, s, a2, ipam.Claim{Owner: ipam.Owner{ContainerID: "c2"}})
	s.Close()
	n := 0
	err := filepath.WalkDir(s.meta, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		data, err := os.ReadFile(path)
		trimmed := strings.TrimSpace(string(data))
		for _, key := range []string{"c1\r\neth0", "c1", "c2\r\n", "c2"} {
			if trimmed == key {
				t.Errorf("%s reads as the reference's record %q", path, key)
			}
		}
		if !strings.HasPrefix(trimmed, "{") {
			t.Errorf("%s does not start with '{': %q", path, data)
		}
		return err
	})
	if err != nil || n != 3 {
		t.Fatalf("walked %d files: %v", n, err)
	}
}

func TestStampFollowsTheDirectoryOnly(t *testing.T) {
	s := open(t, t.TempDir())
	before, err := stamp(s.netDir)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, ".cnisuite/owners/x", "{}")
	if same, _ := stamp(s.netDir); !bytes.Equal(same, before) {
		t.Errorf("a write in the index changed the stamp: %s -> %s", before, same)
	}
	write(t, s, "10.0.0.7", "c7")
	if changed, _ := stamp(s.netDir); bytes.Equal(changed, before) {
		t.Errorf("a new record left the stamp at %s", before)
	}
}

func TestParseEntry(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"ours", `{"v":1,"id":"c1","ifname":"eth0","addrs":[{"ip":"10.0.0.2","rec":5,"netns":"/run/netns/p","nsDev":4,"nsIno":9,"nsId":67312}]}`, true},
		{"legacy owner, no proof", `{"v":1,"id":"c1","addrs":[{"ip":"fd00::2"}]}`, true},
		{"no addresses", `{"v":1,"id":"c1","addrs":[]}`, true},
		{"future version", `{"v":2,"id":"c1","addrs":[]}`, false},
		{"no id", `{"v":1,"id":"","addrs":[]}`, false},
		{"id with spaces around", `{"v":1,"id":" c1","addrs":[]}`, false},
		{"control in ifname", `{"v":1,"id":"c1","ifname":"e\u0001","addrs":[]}`, false},
		{"bad address", `{"v":1,"id":"c1","addrs":[{"ip":"10.0.0"}]}`, false},
		{"missing address", `{"v":1,"id":"c1","addrs":[{"rec":1}]}`, false},
		{"zone", `{"v":1,"id":"c1","addrs":[{"ip":"fe80::1%eth0"}]}`, false},
		{"mapped", `{"v":1,"id":"c1","addrs":[{"ip":"::ffff:10.0.0.2"}]}`, false},
		{"twice", `{"v":1,"id":"c1","addrs":[{"ip":"10.0.0.2"},{"ip":"10.0.0.2"}]}`, false},
		{"NUL in netns", `{"v":1,"id":"c1","addrs":[{"ip":"10.0.0.2","netns":"/a\u0000b"}]}`, false},
		{"not JSON", `c1` + "\r\n" + `eth0`, false},
		{"empty", ``, false},
		{"huge", `{"v":1,"id":"` + strings.Repeat("c", maxEntry) + `","addrs":[]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := parseEntry([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("parseEntry = %+v, %v; want ok=%v", e, err, tt.ok)
			}
		})
	}
}

func FuzzParseEntry(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":"c1","ifname":"eth0","addrs":[{"ip":"10.0.0.2","rec":5,"netns":"/run/netns/p","nsDev":4,"nsIno":9,"nsId":67312}]}`))
	f.Add([]byte(`{"v":1,"id":"c1","addrs":[{"ip":"fd00::2"},{"ip":"10.0.0.2"}]}`))
	f.Add([]byte(`{"v":1,"id":"x","addrs":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := parseEntry(data)
		if err != nil {
			return
		}
		if _, err := ParseRecord(FormatRecord(e.owner())); err != nil {
			t.Fatalf("accepted an owner no record can hold: %+v", e.owner())
		}
		// What we write must read back the same, and never look like a record.
		out := formatEntry(e)
		back, err := parseEntry(out)
		if err != nil || !bytes.Equal(formatEntry(back), out) {
			t.Fatalf("round trip of %s: %+v, %v", out, back, err)
		}
		if out[0] != '{' {
			t.Fatalf("entry %s does not start with '{'", out)
		}
	})
}

// TestWritesKeepTheirInodes: the stamp, an owner's entry and the round-robin
// note are written in place from one verb to the next, so that no verb
// creates and deletes inodes for them (see overwriteAt).
func TestWritesKeepTheirInodes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	reserve(t, s, a1, c1)
	paths := []string{filepath.Join(s.meta, stampName), filepath.Join(s.meta, ownersName, ownerKey(o1)), filepath.Join(s.Dir(), lastReservedPrefix+"0")}
	inodes := func() []uint64 {
		var out []uint64
		for _, p := range paths {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			out = append(out, st.Ino)
		}
		return out
	}
	s.Close()
	before := inodes()
	s = open(t, dir)
	reserve(t, s, a6, c1)
	s.Close()
	if after := inodes(); !slices.Equal(before, after) {
		t.Errorf("inodes of %q went from %v to %v", paths, before, after)
	}
}
