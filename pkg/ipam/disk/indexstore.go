package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cnisuite/cni/pkg/ipam"
)

func (s *Store) stampPath() string           { return filepath.Join(s.meta, stampName) }
func (s *Store) entryPath(key string) string { return filepath.Join(s.meta, ownersName, key) }

// checkIndex rebuilds the index unless the stamp matches the directory.
func (s *Store) checkIndex() error {
	want, err := stamp(s.dir)
	if err != nil {
		return err
	}
	if got, err := os.ReadFile(s.stampPath()); err == nil && bytes.Equal(got, want) {
		return nil
	}
	// A rebuild that got through with errors on single files leaves the
	// index without a stamp (rebuilt again next time) but usable.
	if err := s.rebuild(); err != nil && !s.rebuilt {
		return err
	}
	return nil
}

// invalidate removes the stamp before the first change of a verb, so that a
// verb killed half-way leaves an index that the next Open rebuilds.
func (s *Store) invalidate() error {
	if s.dirty {
		return nil
	}
	if err := os.Remove(s.stampPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("invalidating the reservation index: %w", err)
	}
	s.dirty = true
	return nil
}

// touched notes the directory as it is right after one of our changes.
// Writing in .cnisuite/ does not change the network directory itself.
func (s *Store) touched() error {
	st, err := stamp(s.dir)
	if err != nil {
		s.broken = true
	}
	s.last = st
	return err
}

// entryOf returns the attachment's index entry (nil when it has none). An
// unreadable entry, or one naming another owner, is errStale.
func (s *Store) entryOf(o ipam.Owner) (*entry, error) {
	key := ownerKey(o)
	if e, ok := s.entries[key]; ok {
		return e, nil
	}
	f, err := os.Open(s.entryPath(key))
	if errors.Is(err, fs.ErrNotExist) {
		s.entries[key] = nil
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the reservation index: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxEntry+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	e, err := parseEntry(data)
	if err != nil || e.owner() != o {
		return nil, fmt.Errorf("%w: %s: %v", errStale, f.Name(), err)
	}
	s.entries[key] = e
	return e, nil
}

// writeEntry replaces the attachment's index file (removes it when e holds
// no address). A failure leaves the stamp unwritten.
func (s *Store) writeEntry(o ipam.Owner, e *entry) error {
	key := ownerKey(o)
	var err error
	if e == nil || len(e.Addrs) == 0 {
		err = os.Remove(s.entryPath(key))
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		e = nil
	} else {
		err = replaceFile(s.entryPath(key), formatEntry(e))
	}
	if err != nil {
		s.broken = true
		delete(s.entries, key)
		return fmt.Errorf("updating the reservation index: %w", err)
	}
	s.entries[key] = e
	return nil
}

// restoreEntry undoes writeEntry on a path that already fails.
func (s *Store) restoreEntry(o ipam.Owner, old *entry) { _ = s.writeEntry(o, old) }

// verified lists the addresses of o's entry, each checked against its
// record: a record missing or naming someone else is errStale.
func (s *Store) verified(o ipam.Owner) ([]netip.Addr, error) {
	e, err := s.entryOf(o)
	if err != nil || e == nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(e.Addrs))
	for _, h := range e.Addrs {
		r, err := s.read(h.IP)
		if errors.Is(err, fs.ErrNotExist) || (err == nil && (r.Corrupt != nil || r.Owner != o)) {
			return nil, fmt.Errorf("%w: %s is indexed for %s", errStale, h.IP, o)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, h.IP)
	}
	return out, nil
}

// withIndex runs a query on the index, and again after a rebuild when the
// index turned out to disagree with the records.
func (s *Store) withIndex(query func() error) error {
	err := query()
	if !errors.Is(err, errStale) || s.rebuilt {
		return err
	}
	if err := s.rebuild(); err != nil {
		return err
	}
	return query()
}

// Rebuild makes the index anew from the records; GC calls it, so that after
// a GC nothing of the index outlives its records.
func (s *Store) Rebuild() error { return s.rebuild() }

// rebuild indexes every record that names an owner. What an old entry said
// about a record (its namespace) is kept only when the entry names that very
// record: same owner, same inode. Entries of no record are removed, and so
// are the temporary files of writers killed half-way (the usual reason for
// a rebuild).
func (s *Store) rebuild() error {
	if err := s.invalidate(); err != nil {
		return err
	}
	owners := filepath.Join(s.meta, ownersName)
	if err := os.MkdirAll(owners, dirMode); err != nil {
		s.broken = true
		return fmt.Errorf("creating the reservation index %s: %w", owners, err)
	}
	staleErr := s.RemoveStale()
	recs, scanErr := s.scan()
	old := s.readEntries(owners)
	want := map[string]*entry{}
	for _, r := range recs {
		if r.Corrupt != nil {
			continue
		}
		key := ownerKey(r.Owner)
		h := held{IP: r.Addr}
		if oh := old[key].find(r.Addr); oh != nil && oh.Rec == r.ino {
			h = *oh
		}
		want[key] = want[key].with(r.Owner, h)
	}
	s.entries = map[string]*entry{}
	errs := []error{staleErr, scanErr}
	for key, e := range want {
		if o := old[key]; o == nil || !bytes.Equal(formatEntry(o), formatEntry(e)) {
			errs = append(errs, s.writeEntry(e.owner(), e))
		}
		s.entries[key] = e
	}
	errs = append(errs, s.removeUnwanted(owners, want), s.touched())
	s.rebuilt = true
	if err := errors.Join(errs...); err != nil {
		s.broken = true
		return fmt.Errorf("rebuilding the reservation index: %w", err)
	}
	s.broken = false
	return nil
}

// readEntries reads every readable index file, by key; others are ignored
// (removeUnwanted deletes them).
func (s *Store) readEntries(owners string) map[string]*entry {
	files, _ := os.ReadDir(owners)
	out := map[string]*entry{}
	for _, f := range files {
		if !isOwnerKey(f.Name()) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(owners, f.Name()))
		if err != nil || len(data) > maxEntry {
			continue
		}
		if e, err := parseEntry(data); err == nil && ownerKey(e.owner()) == f.Name() {
			out[f.Name()] = e
		}
	}
	return out
}

// removeUnwanted deletes every file of the owners directory that is not the
// entry of a record's owner (stale entries, temporary files, strays).
func (s *Store) removeUnwanted(owners string, want map[string]*entry) error {
	files, err := os.ReadDir(owners)
	if err != nil {
		return fmt.Errorf("listing %s: %w", owners, err)
	}
	var errs []error
	for _, f := range files {
		if _, ok := want[f.Name()]; ok {
			continue
		}
		if err := os.RemoveAll(filepath.Join(owners, f.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
