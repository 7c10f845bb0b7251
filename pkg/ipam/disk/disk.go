// Package disk is the host-local reservation store: one file per reserved
// address in <dataDir>/<network>/, named by the address and holding
// "containerID\r\nifname"; last_reserved_ip.<set> notes for round-robin; and a
// "lock" file flocked for the whole verb. The layout is the reference
// plugin's, so a node can switch between the two with its reservations kept.
//
// Beside the records, .cnisuite/ holds an index that the reference plugin
// neither needs nor disturbs (see index.go): owners/<key>, one file per
// attachment listing its addresses and the namespace it was added in, so that
// ADD and DEL read a couple of files instead of every record, and so that a
// reservation whose namespace is gone can be proved dead; and "index", a
// stamp of the network directory written after our last change. A missing or
// outdated stamp (a verb killed half-way, the reference plugin or a hand at
// work, another boot) makes Open rebuild the index from the records.
package disk

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/netconf"
)

// DefaultDataDir is where reservations live when the configuration names no dataDir.
const DefaultDataDir = "/var/lib/cni/networks"

const (
	lastReservedPrefix = "last_reserved_ip."
	lockName           = "lock"
	// tmpPrefix starts the names of files being written. The leading dot
	// keeps them from ever parsing as an address, so no reader takes one
	// for a record.
	tmpPrefix = ".reserve-"
	dirMode   = 0o755 // as the reference: operators list these directories
)

// Store is the reservation directory of one network, locked while open.
type Store struct {
	dir, meta string
	lock      *os.File
	// dirty: the stamp was removed before our first change; Close writes
	// last, the stamp taken right after our last change, unless broken says
	// an index update failed (the next Open then rebuilds). A change by
	// someone else after ours thus makes the next Open rebuild.
	dirty, broken bool
	last          []byte
	rebuilt       bool              // the index was rebuilt during this verb
	entries       map[string]*entry // index files read or written, by key; nil: none
}

var _ ipam.Store = (*Store)(nil)

// Open creates <dataDir>/<network> when missing and takes its lock; it blocks
// while another process (ours or the reference plugin) holds it. It then
// rebuilds the index when the stamp says it may be wrong. Close releases it.
func Open(dataDir, network string) (*Store, error) {
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	if err := CheckNetwork(dataDir, network); err != nil {
		return nil, err
	}
	dir := filepath.Join(dataDir, network)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("creating reservation directory %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file in %s: %w", dir, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	s := &Store{dir: dir, meta: filepath.Join(dir, metaName), lock: f, entries: map[string]*entry{}}
	if err := s.checkIndex(); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// CheckNetwork refuses a network name that is not one directory under dataDir.
func CheckNetwork(dataDir, network string) error {
	if network == "" || network == "." || network == ".." || strings.ContainsAny(network, "/\x00") {
		return netconf.Invalid("network name %q cannot name a directory under %s; use a name without '/' that is not '.' or '..'", network, dataDir)
	}
	return nil
}

// Close writes the stamp when this verb changed something and the index is
// right, then releases the lock. An error means only that the next Open
// rebuilds the index.
func (s *Store) Close() error {
	var err error
	if s.dirty && !s.broken && s.last != nil {
		err = replaceFile(s.stampPath(), s.last)
	}
	return errors.Join(err, s.lock.Close())
}

// Dir is the network's reservation directory, for messages.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(a netip.Addr) string { return filepath.Join(s.dir, a.String()) }

// Reserve writes the record to a temporary file, syncs it, indexes it and
// links it to the address's name: link fails when the name exists, so a
// reservation is never overwritten, and neither a killed process nor a
// kernel crash can leave an empty or partial record (the data is on disk
// before the name exists). The index names the record's inode before the
// record exists, so a kill in between leaves an entry that the rebuild drops.
//
// The directory is not synced: a kernel crash that loses the new name also
// ends the container that held it, so no live container can lose its address
// that way, and it saves one of the two fsyncs of an ADD (make bench).
func (s *Store) Reserve(addr netip.Addr, c ipam.Claim, set int) (bool, error) {
	name := s.path(addr)
	// Skip the write for addresses visibly taken: a walk over a busy range
	// meets many. The link below stays the authoritative check.
	if _, err := os.Lstat(name); err == nil {
		return false, nil
	}
	var old *entry
	err := s.withIndex(func() (err error) {
		old, err = s.entryOf(c.Owner)
		return err
	})
	if err != nil {
		return false, err
	}
	if err := s.invalidate(); err != nil {
		return false, err
	}
	defer func() { _ = s.touched() }()
	tmp, ino, err := writeTemp(s.dir, tmpPrefix, FormatRecord(c.Owner), true)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp) // before touched: the removal changes the directory too
	if err := s.writeEntry(c.Owner, old.with(c.Owner, heldFor(addr, ino, c.Netns))); err != nil {
		return false, err
	}
	if err := os.Link(tmp, name); err != nil {
		s.restoreEntry(c.Owner, old)
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("reserving %s: %w", addr, err)
	}
	// On failure the record is taken back, so that a false result always
	// means nothing changed.
	if err := s.writeLastReserved(set, addr); err != nil {
		os.Remove(name)
		s.restoreEntry(c.Owner, old)
		return false, err
	}
	return true, nil
}

// writeTemp writes data to a new temporary file in dir (mode 0600, as
// CreateTemp makes it), synced when asked, and returns its path and inode.
func writeTemp(dir, prefix string, data []byte, sync bool) (path string, ino uint64, retErr error) {
	f, err := os.CreateTemp(dir, prefix)
	if err != nil {
		return "", 0, fmt.Errorf("creating a file in %s: %w", dir, err)
	}
	defer func() {
		if err := f.Close(); err != nil && retErr == nil {
			retErr = fmt.Errorf("writing %s: %w", f.Name(), err)
		}
		if retErr != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return "", 0, fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return "", 0, fmt.Errorf("syncing %s: %w", f.Name(), err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", 0, fmt.Errorf("looking at %s: %w", f.Name(), err)
	}
	return f.Name(), st.Ino, nil
}

// replaceFile writes data to path by rename, so that readers never see it
// half written.
func replaceFile(path string, data []byte) error {
	tmp, _, err := writeTemp(filepath.Dir(path), indexTmpPrefix, data, false)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return nil
}

// writeLastReserved replaces the round-robin note by rename.
func (s *Store) writeLastReserved(set int, addr netip.Addr) error {
	tmp, _, err := writeTemp(s.dir, tmpPrefix, []byte(addr.String()), false)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, lastReservedPrefix+strconv.Itoa(set))); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("noting the last reserved address: %w", err)
	}
	return nil
}

// LastReserved reads the round-robin note of a range set.
func (s *Store) LastReserved(set int) (netip.Addr, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, lastReservedPrefix+strconv.Itoa(set)))
	if errors.Is(err, fs.ErrNotExist) {
		return netip.Addr{}, nil
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("reading the last reserved address: %w", err)
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(data)))
	if err != nil {
		return netip.Addr{}, nil // only a hint: a garbled one restarts the walk
	}
	return a.Unmap(), nil
}

// Lookup reads the record of addr.
func (s *Store) Lookup(addr netip.Addr) (ipam.Reservation, bool, error) {
	r, err := s.read(addr)
	if errors.Is(err, fs.ErrNotExist) {
		return r.Reservation, false, nil
	}
	return r.Reservation, err == nil, err
}

// record is a reservation with the identity of its file.
type record struct {
	ipam.Reservation
	ino uint64
}

// read returns the record of addr; a corrupt record is not an error.
func (s *Store) read(addr netip.Addr) (record, error) {
	r := record{Reservation: ipam.Reservation{Addr: addr}}
	f, err := os.Open(s.path(addr))
	if err != nil {
		return r, fmt.Errorf("reading the reservation of %s: %w", addr, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return r, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return r, fmt.Errorf("looking at %s: %w", f.Name(), err)
	}
	r.ino, r.Since = st.Ino, timeOf(st.Mtim)
	r.Owner, r.Corrupt = ParseRecord(data)
	return r, nil
}

// scan reads every record. A file is a record when its name is an address
// spelt the way the reference spells it; the lock, the notes, temporary
// files and the index never are.
func (s *Store) scan() ([]record, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", s.dir, err)
	}
	var out []record
	var errs []error
	for _, e := range entries {
		a, err := netip.ParseAddr(e.Name())
		if err != nil || a.String() != e.Name() || !e.Type().IsRegular() {
			continue
		}
		r, err := s.read(a)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released between listing and reading
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// All reads every record (Netns left zero).
func (s *Store) All() ([]ipam.Reservation, error) {
	recs, err := s.scan()
	out := make([]ipam.Reservation, len(recs))
	for i, r := range recs {
		out[i] = r.Reservation
	}
	return out, err
}

// Inspect reads every record and, from the index, the namespace its owner
// was added in: only when the index names this very record (same owner,
// same inode), so that nothing is inferred for a record written by someone
// else.
func (s *Store) Inspect() ([]ipam.Reservation, error) {
	recs, err := s.scan()
	out := make([]ipam.Reservation, len(recs))
	for i, r := range recs {
		out[i] = r.Reservation
		if r.Corrupt != nil {
			continue
		}
		e, eerr := s.entryOf(r.Owner)
		if h := e.find(r.Addr); eerr == nil && h != nil && h.Rec != 0 && h.Rec == r.ino && e.owner() == r.Owner {
			out[i].Netns = h.netns()
		}
	}
	return out, err
}

// ByOwner lists the addresses the attachment holds, from the index: its
// entry and its container's legacy entry, each address checked against its
// record.
func (s *Store) ByOwner(owner ipam.Owner) ([]netip.Addr, error) {
	var out []netip.Addr
	err := s.withIndex(func() error {
		out = nil
		for _, o := range owners(owner) {
			addrs, err := s.verified(o)
			if err != nil {
				return err
			}
			out = append(out, addrs...)
		}
		return nil
	})
	return out, err
}

// owners are the index entries an attachment's addresses may be under.
func owners(o ipam.Owner) []ipam.Owner {
	if o.Legacy() {
		return []ipam.Owner{o}
	}
	return []ipam.Owner{o, {ContainerID: o.ContainerID}}
}

// ReleaseByOwner frees the attachment's addresses; see ipam.Store.
func (s *Store) ReleaseByOwner(owner ipam.Owner) ([]netip.Addr, error) {
	var addrs []netip.Addr
	err := s.withIndex(func() error {
		addrs = nil
		for _, o := range owners(owner) {
			var err error
			if addrs, err = s.verified(o); err != nil || len(addrs) > 0 {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var released []netip.Addr
	var errs []error
	for _, a := range addrs {
		if err := s.Release(a); err != nil {
			errs = append(errs, err)
			continue
		}
		released = append(released, a)
	}
	return released, errors.Join(errs...)
}

// Release removes the record of addr and its index item. Removal is not
// synced: a record that comes back after a crash holds an address GC can
// reclaim, it never gives one address to two containers.
func (s *Store) Release(addr netip.Addr) error {
	r, err := s.read(addr)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.invalidate(); err != nil {
		return err
	}
	err = os.Remove(s.path(addr))
	_ = s.touched() // a failure leaves the stamp unwritten: the next Open rebuilds
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("releasing %s: %w", addr, err)
	}
	if r.Corrupt != nil {
		return nil // in no entry: the rebuild indexes only owned records
	}
	e, err := s.entryOf(r.Owner)
	if err != nil || e.find(addr) == nil {
		s.broken = true // the index missed this record: rebuild next time
		return nil
	}
	return s.writeEntry(r.Owner, e.without(addr))
}

// RemoveStale deletes temporary files left by a process that died while
// writing. Every writer holds the lock, so while we hold it none is in use.
func (s *Store) RemoveStale() error {
	if err := s.invalidate(); err != nil {
		return err
	}
	var errs []error
	for _, d := range []struct{ dir, prefix string }{
		{s.dir, tmpPrefix}, {s.meta, indexTmpPrefix}, {filepath.Join(s.meta, ownersName), indexTmpPrefix},
	} {
		entries, err := os.ReadDir(d.dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("listing %s: %w", d.dir, err))
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), d.prefix) {
				if err := os.Remove(filepath.Join(d.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(append(errs, s.touched())...)
}

func timeOf(ts unix.Timespec) time.Time { return time.Unix(ts.Unix()) }
