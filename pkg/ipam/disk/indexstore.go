package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
)

// openIndex opens .cnisuite and its owners directory, creating them when
// missing. Fresh says one was created: whatever the stamp says, the index
// must be rebuilt.
func (s *Store) openIndex() (fresh bool, _ error) {
	meta, fresh, err := s.ownDir(s.netDir, metaName)
	if err != nil {
		return false, err
	}
	owners, created, err := s.ownDir(meta, ownersName)
	if err != nil {
		meta.Close()
		return false, err
	}
	s.metaDir, s.ownersDir = meta, owners
	return fresh || created, nil
}

// ownDir opens the directory name in dir, creating it when missing. What
// else holds the name (a file, a symbolic link to anywhere, ...) was not
// made by the store: it is moved aside, never followed nor removed, and the
// directory made anew.
func (s *Store) ownDir(dir *os.File, name string) (*os.File, bool, error) {
	d, created, err := openDir(dir, name)
	if errors.As(err, new(*wrongType)) {
		if err = s.moveAside(dir, name); err == nil {
			d, created, err = openDir(dir, name)
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("opening the reservation index: %w", err)
	}
	return d, created, nil
}

// moveAside renames an entry the store did not make, found at a name of its
// own in dir, to <name>.stray-<time> beside it, and logs where it went: kept
// for whoever put it there, out of the store's way, never read. The new
// name is neither an address nor an owner key, so nothing takes it for a
// record or an index entry.
func (s *Store) moveAside(dir *os.File, name string) error {
	st, err := statAt(dir, name)
	if err != nil {
		return err
	}
	to := name + ".stray-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := unix.Renameat(int(dir.Fd()), name, int(dir.Fd()), to); err != nil {
		return pathErr("rename", dir, name, err)
	}
	s.log.Warn("moved aside what host-local did not create at a name it uses; look at it and remove it",
		"path", filepath.Join(dir.Name(), name), "was", kindOf(st.Mode), "now", filepath.Join(dir.Name(), to))
	return nil
}

// checkIndex rebuilds the index unless it is not fresh and the stamp
// matches the directory.
func (s *Store) checkIndex(fresh bool) error {
	want, err := stamp(s.netDir)
	if err != nil {
		return err
	}
	got, _, err := readAt(s.metaDir, stampName, maxStamp)
	if err == nil && bytes.Equal(got, want) && !fresh {
		return nil
	}
	if errors.As(err, new(*wrongType)) {
		if err := s.moveAside(s.metaDir, stampName); err != nil {
			return fmt.Errorf("invalidating the reservation index: %w", err)
		}
	}
	// A rebuild that got through with errors on single files leaves the
	// index without a stamp (rebuilt again next time) but usable.
	if err := s.rebuild(); err != nil && !s.rebuilt {
		return err
	}
	return nil
}

// invalidate empties the stamp before the first change of a verb, so that a
// verb killed half-way leaves an index that the next Open rebuilds.
func (s *Store) invalidate() error {
	if s.dirty {
		return nil
	}
	if err := overwriteAt(s.metaDir, indexTmpPrefix, stampName, nil); err != nil {
		return fmt.Errorf("invalidating the reservation index: %w", err)
	}
	s.dirty = true
	return nil
}

// touched notes the directory as it is right after one of our changes.
// Writing in .cnisuite/ does not change the network directory itself.
func (s *Store) touched() error {
	st, err := stamp(s.netDir)
	if err != nil {
		s.broken = true
	}
	s.last = st
	return err
}

// entryOf returns the attachment's index entry (nil when it has none). An
// unreadable entry (not a regular file included), or one naming another
// owner, is errStale.
func (s *Store) entryOf(o ipam.Owner) (*entry, error) {
	key := ownerKey(o)
	if e, ok := s.entries[key]; ok {
		return e, nil
	}
	data, _, err := readAt(s.ownersDir, key, maxEntry)
	if errors.Is(err, fs.ErrNotExist) {
		s.entries[key] = nil
		return nil, nil
	}
	if errors.As(err, new(*wrongType)) {
		return nil, fmt.Errorf("%w: %v", errStale, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the reservation index: %w", err)
	}
	e, err := parseEntry(data)
	if err != nil || e.owner() != o {
		return nil, fmt.Errorf("%w: %s: %v", errStale, filepath.Join(s.ownersDir.Name(), key), err)
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
		err = removeAt(s.ownersDir, key)
		e = nil
	} else if data := formatEntry(e); !s.prep.linkEntry(s.ownersDir, key, data) {
		err = overwriteAt(s.ownersDir, indexTmpPrefix, key, data)
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

// verified reads the records of o's entry: a record missing or naming
// someone else is errStale.
func (s *Store) verified(o ipam.Owner) ([]record, error) {
	e, err := s.entryOf(o)
	if err != nil || e == nil {
		return nil, err
	}
	out := make([]record, 0, len(e.Addrs))
	for _, h := range e.Addrs {
		r, err := s.read(h.IP)
		if errors.Is(err, fs.ErrNotExist) || (err == nil && (r.Corrupt != nil || r.Owner != o)) {
			return nil, fmt.Errorf("%w: %s is indexed for %s", errStale, h.IP, o)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
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
	staleErr := s.RemoveStale()
	recs, scanErr := s.scan()
	old := s.readEntries()
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
	errs := []error{staleErr, scanErr, s.removeUnwanted(want)}
	for key, e := range want {
		if o := old[key]; o == nil || !bytes.Equal(formatEntry(o), formatEntry(e)) {
			errs = append(errs, s.writeEntry(e.owner(), e))
		}
		s.entries[key] = e
	}
	errs = append(errs, s.touched())
	s.rebuilt = true
	if err := errors.Join(errs...); err != nil {
		s.broken = true
		return fmt.Errorf("rebuilding the reservation index: %w", err)
	}
	s.broken = false
	return nil
}

// readEntries reads every readable index file, by key; others are ignored
// (removeUnwanted deals with them).
func (s *Store) readEntries() map[string]*entry {
	files, _ := listAt(s.ownersDir)
	out := map[string]*entry{}
	for _, f := range files {
		if !isOwnerKey(f.Name()) {
			continue
		}
		data, _, err := readAt(s.ownersDir, f.Name(), maxEntry)
		if err != nil {
			continue
		}
		if e, err := parseEntry(data); err == nil && ownerKey(e.owner()) == f.Name() {
			out[f.Name()] = e
		}
	}
	return out
}

// removeUnwanted deletes the index files of owners that hold no record, and
// moves aside whatever sits at an owner key's name but is not a file. Only
// names the store gives its files are looked at: anything else in the
// directory is not the store's, and left.
func (s *Store) removeUnwanted(want map[string]*entry) error {
	files, err := listAt(s.ownersDir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", s.ownersDir.Name(), err)
	}
	var errs []error
	for _, f := range files {
		name := f.Name()
		switch {
		case !isOwnerKey(name) && !strings.HasPrefix(name, indexTmpPrefix):
		case !f.Type().IsRegular():
			if isOwnerKey(name) {
				errs = append(errs, s.moveAside(s.ownersDir, name))
			}
		case want[name] == nil:
			errs = append(errs, removeAt(s.ownersDir, name))
		}
	}
	return errors.Join(errs...)
}
