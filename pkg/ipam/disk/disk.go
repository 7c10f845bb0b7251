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
//
// The data dir and the network directory are the operator's: a symbolic
// link there is followed (say /var/lib/cni -> /data/cni). Everything below
// the network directory is reached from it without following any (see
// fsat.go), read only from regular files and within bounds, and removed
// only when it is a file of the store's own. An entry the store did not make
// where it keeps one of its own is moved aside (index.go), named like an
// address it blocks that address and is listed as such (ErrNotRecord), and
// at the lock's name it stops every verb with a message saying what to do.
//
// Of the suite it imports only pkg/ipam and pkg/netconf; never a plugin,
// pkg/ipam/hostlocal or pkg/ipam/stale (the plugin judges staleness, the store
// keeps records).
package disk

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
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
	// maxNote bounds what is read of a round-robin note: one address.
	maxNote = 256
)

// ErrNotRecord is wrapped by Reservation.Corrupt for an entry named like an
// address that is not a regular file (a directory, a symbolic link, a FIFO,
// ...): it keeps its address from being handed out, and the store neither
// reads, follows nor removes it.
var ErrNotRecord = errors.New("not a reservation record")

// Store is the reservation directory of one network, locked while open.
type Store struct {
	dir, meta string // paths, for messages
	// The network directory, .cnisuite and .cnisuite/owners, open: every
	// name the store uses is one component relative to one of them.
	netDir, metaDir, ownersDir *os.File
	lock                       *os.File
	log                        *slog.Logger // what the store found out of place
	// dirty: the stamp was removed before our first change; Close writes
	// last, the stamp taken right after our last change, unless broken says
	// an index update failed (the next Open then rebuilds). A change by
	// someone else after ours thus makes the next Open rebuild.
	dirty, broken bool
	last          []byte
	rebuilt       bool              // the index was rebuilt during this verb
	entries       map[string]*entry // index files read or written, by key; nil: none
	prep          *prepared         // records written ahead of the lock; nil: none
}

var _ ipam.Store = (*Store)(nil)

// Open is OpenLogged without a log.
func Open(dataDir, network string) (*Store, error) { return OpenLogged(dataDir, network, nil) }

// OpenLogged creates <dataDir>/<network> when missing and takes its lock,
// waiting at most lockWait while another process (ours or the reference
// plugin) holds it. It then rebuilds the index when the stamp says it may be
// wrong. What it finds out of place, then and until Close, is logged to log
// as a warning (nil: not logged). Close releases it.
func OpenLogged(dataDir, network string, log *slog.Logger) (*Store, error) {
	return openStore(dataDir, network, log, ipam.Owner{}, 0, nil)
}

// OpenToReserve is OpenLogged for a verb that reserves up to n addresses
// for owner: their records are written and synced (prepared.go) while the
// lock is awaited, the index read and the addresses chosen. early, when the
// verb began with BeginReserve for the same store and owner, is taken over
// (its record is one of the n); else it is discarded.
func OpenToReserve(dataDir, network string, log *slog.Logger, owner ipam.Owner, n int, early *Early) (*Store, error) {
	return openStore(dataDir, network, log, owner, n, early)
}

// Early is a reservation begun before its verb has read the whole
// configuration: the network directory open and a record of the owner being
// written and synced, the slowest step of a reservation, while the rest of
// the configuration is decoded and checked.
type Early struct {
	dataDir, network string
	netDir           *os.File
	prep             *prepared
}

// BeginReserve starts writing a record of owner, which the caller checked
// (CheckOwner), in <dataDir>/<network> when that directory exists: a
// configuration found invalid afterwards must not have created it. nil when
// there is no such directory (a network's first ADD) or the network's name
// is not valid; nil is a valid *Early.
func BeginReserve(dataDir, network string, owner ipam.Owner) *Early {
	dataDir = cmp.Or(dataDir, DefaultDataDir)
	if CheckNetwork(dataDir, network) != nil {
		return nil
	}
	dir, err := os.OpenFile(filepath.Join(dataDir, network), os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil
	}
	return &Early{dataDir: dataDir, network: network, netDir: dir, prep: prepare(dir, owner, 1)}
}

// Discard drops what e began, unless OpenToReserve took it over: the
// unnamed record goes with its descriptor.
func (e *Early) Discard() {
	if e == nil || e.netDir == nil {
		return
	}
	e.prep.close()
	e.netDir.Close()
	e.netDir, e.prep = nil, nil
}

// takeOver hands e's directory and records to a store of dataDir/network
// reserving for owner; false, with e discarded, when e began another.
func (e *Early) takeOver(dataDir, network string, owner ipam.Owner) (*os.File, *prepared, bool) {
	if e == nil || e.netDir == nil || e.dataDir != dataDir || e.network != network || e.prep.owner != owner {
		e.Discard()
		return nil, nil, false
	}
	dir, prep := e.netDir, e.prep
	e.netDir, e.prep = nil, nil
	return dir, prep, true
}

func openStore(dataDir, network string, log *slog.Logger, owner ipam.Owner, n int, early *Early) (*Store, error) {
	dataDir = cmp.Or(dataDir, DefaultDataDir)
	if err := CheckNetwork(dataDir, network); err != nil {
		early.Discard()
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(dataDir, network)
	netDir, prep, ok := early.takeOver(dataDir, network, owner)
	if ok {
		prep.more(netDir, n-1)
	} else {
		var err error
		if netDir, err = openNetworkDir(dir); err != nil {
			return nil, err
		}
		if n > 0 {
			prep = prepare(netDir, owner, n)
		}
	}
	lock, err := lockNetwork(netDir)
	if err != nil {
		prep.close()
		netDir.Close()
		return nil, err
	}
	s := &Store{dir: dir, meta: filepath.Join(dir, metaName), netDir: netDir, lock: lock, log: log, entries: map[string]*entry{}, prep: prep}
	fresh, err := s.openIndex()
	if err == nil {
		err = s.checkIndex(fresh)
	}
	if err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

// openNetworkDir creates the network's directory when missing and opens it,
// following symbolic links: this path is the operator's.
func openNetworkDir(dir string) (*os.File, error) {
	err := os.MkdirAll(dir, dirMode)
	var f *os.File
	if err == nil {
		f, err = os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	}
	if err != nil {
		return nil, netconf.Errorf(netconf.CodeIO, "cannot keep reservations in %s (make it a directory the runtime can write): %w", dir, err)
	}
	return f, nil
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
		err = overwriteAt(s.metaDir, indexTmpPrefix, stampName, s.last)
	}
	return errors.Join(err, s.closeFiles())
}

// closeFiles closes the prepared records, the directories, then the lock.
func (s *Store) closeFiles() error {
	s.prep.close()
	var errs []error
	for _, f := range []*os.File{s.ownersDir, s.metaDir, s.netDir, s.lock} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// Dir is the network's reservation directory, for messages.
func (s *Store) Dir() string { return s.dir }

// Reserve writes the record to a temporary file (or takes one prepared by
// OpenToReserve), syncs it, indexes it and links it to the address's name:
// link fails when the name exists, so a reservation is never overwritten,
// and neither a killed process nor a kernel crash can leave an empty or
// partial record (the data is on disk before the name exists). The index names the record's inode before the
// record exists, so a kill in between leaves an entry that the rebuild drops.
//
// The directory is not synced: a kernel crash that loses the new name also
// ends the container that held it, so no live container can lose its address
// that way, and it saves one of the two fsyncs of an ADD (make bench).
func (s *Store) Reserve(addr netip.Addr, c ipam.Claim, set int) (bool, error) {
	name := addr.String()
	// Skip the write for addresses visibly taken: a walk over a busy range
	// meets many. The link below stays the authoritative check.
	if _, err := statAt(s.netDir, name); err == nil {
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
	rec, err := s.newRecord(c.Owner)
	if err != nil {
		return false, err
	}
	defer s.removeTemp(rec) // before touched: the removal changes the directory too
	if err := s.writeEntry(c.Owner, old.with(c.Owner, heldFor(addr, rec.ino, c.Netns))); err != nil {
		return false, err
	}
	if err := s.link(rec, name); err != nil {
		s.restoreEntry(c.Owner, old)
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		if rec.prepared {
			// An unnamed file cannot be linked here (no /proc, say): the
			// records are written under a temporary name from now on.
			s.prep.close()
			s.prep = nil
			return s.Reserve(addr, c, set)
		}
		return false, fmt.Errorf("reserving %s: %w", addr, pathErr("link", s.netDir, name, err))
	}
	// On failure the record is taken back, so that a false result always
	// means nothing changed.
	if err := s.writeLastReserved(set, addr); err != nil {
		_ = removeAt(s.netDir, name)
		s.restoreEntry(c.Owner, old)
		return false, err
	}
	return true, nil
}

// newRecord is a synced record, ready to be linked to an address's name:
// prepared ahead of the lock, or written under the temporary name tmp.
type newRecord struct {
	ino      uint64
	tmp      string
	prepared bool
}

// newRecord returns the next prepared record of o, or else writes one.
func (s *Store) newRecord(o ipam.Owner) (newRecord, error) {
	if ino, ok := s.prep.next(o); ok {
		return newRecord{ino: ino, prepared: true}, nil
	}
	tmp, ino, err := writeTemp(s.netDir, tmpPrefix, FormatRecord(o), true)
	return newRecord{ino: ino, tmp: tmp}, err
}

// link gives r the name name; it fails with EEXIST when the name is taken.
func (s *Store) link(r newRecord, name string) error {
	if r.prepared {
		return s.prep.link(s.netDir, name)
	}
	return unix.Linkat(int(s.netDir.Fd()), r.tmp, int(s.netDir.Fd()), name, 0)
}

// removeTemp removes r's temporary name, if it has one.
func (s *Store) removeTemp(r newRecord) {
	if r.tmp != "" {
		_ = removeAt(s.netDir, r.tmp)
	}
}

// writeLastReserved writes the round-robin note (overwriteAt: a symbolic
// link or a FIFO at its name is replaced itself, never followed). A
// directory there only costs the hint: warned about, not an error.
func (s *Store) writeLastReserved(set int, addr netip.Addr) error {
	name := lastReservedPrefix + strconv.Itoa(set)
	err := overwriteAt(s.netDir, tmpPrefix, name, []byte(addr.String()))
	if errors.Is(err, unix.EISDIR) {
		s.noteIgnored(name, "a directory")
		return nil
	}
	if err != nil {
		return fmt.Errorf("noting the last reserved address: %w", err)
	}
	return nil
}

// LastReserved reads the round-robin note of a range set. It is only a
// hint: one that cannot be read (not a regular file, garbled, unreadable)
// restarts the walk, with a warning.
func (s *Store) LastReserved(set int) (netip.Addr, error) {
	name := lastReservedPrefix + strconv.Itoa(set)
	data, _, err := readAt(s.netDir, name, maxNote)
	if errors.Is(err, fs.ErrNotExist) {
		return netip.Addr{}, nil
	}
	var a netip.Addr
	if err == nil {
		a, err = netip.ParseAddr(strings.TrimSpace(string(data)))
	}
	if err != nil {
		s.noteIgnored(name, err.Error())
		return netip.Addr{}, nil
	}
	return a.Unmap(), nil
}

// noteIgnored warns that a round-robin note is ignored, and says why.
func (s *Store) noteIgnored(name, why string) {
	s.log.Warn("ignoring host-local's round-robin note: addresses are handed out from the start of the range; remove it by hand if it is not a file, host-local writes it again",
		"path", filepath.Join(s.dir, name), "reason", why)
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

// read returns the record of addr; a corrupt record, or an entry at its
// name that is not a record (ErrNotRecord), is not an error.
func (s *Store) read(addr netip.Addr) (record, error) {
	r := record{Reservation: ipam.Reservation{Addr: addr}}
	data, st, err := readAt(s.netDir, addr.String(), maxRecord)
	var wt *wrongType
	switch {
	case errors.As(err, &wt):
		r.Since = timeOf(wt.st.Mtim)
		r.Corrupt = fmt.Errorf("%s, %w: no ADD gets %s while it is there, and host-local never removes it; remove it by hand once you have checked that nothing needs it", wt.kind, ErrNotRecord, addr)
		return r, nil
	case err != nil:
		return r, fmt.Errorf("reading the reservation of %s: %w", addr, err)
	}
	r.ino, r.Since = st.Ino, timeOf(st.Mtim)
	r.Owner, r.Corrupt = ParseRecord(data)
	return r, nil
}

// scan reads every entry named by an address spelt the way the reference
// spells it: the records, and whatever else blocks an address; the lock,
// the notes, temporary files and the index never are one.
func (s *Store) scan() ([]record, error) {
	entries, err := listAt(s.netDir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", s.dir, err)
	}
	var out []record
	var errs []error
	for _, e := range entries {
		a, err := netip.ParseAddr(e.Name())
		if err != nil || a.String() != e.Name() {
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

// All reads every record (Netns left zero), and lists every other entry that
// blocks an address with Corrupt wrapping ErrNotRecord.
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
			recs, err := s.verified(o)
			if err != nil {
				return err
			}
			for _, r := range recs {
				out = append(out, r.Addr)
			}
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
	var recs []record
	err := s.withIndex(func() error {
		recs = nil
		for _, o := range owners(owner) {
			var err error
			if recs, err = s.verified(o); err != nil || len(recs) > 0 {
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
	for _, r := range recs {
		if err := s.release(r); err != nil {
			errs = append(errs, err)
			continue
		}
		released = append(released, r.Addr)
	}
	return released, errors.Join(errs...)
}

// Release removes the record of addr and its index item; an entry there that
// is not a record is left alone, and is an error. Removal is not synced: a
// record that comes back after a crash holds an address GC can reclaim, it
// never gives one address to two containers.
func (s *Store) Release(addr netip.Addr) error {
	r, err := s.read(addr)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.release(r)
}

// release is Release of a record just read under the lock.
func (s *Store) release(r record) error {
	addr := r.Addr
	if errors.Is(r.Corrupt, ErrNotRecord) {
		return fmt.Errorf("releasing %s: %w", addr, r.Corrupt)
	}
	if err := s.invalidate(); err != nil {
		return err
	}
	err := unix.Unlinkat(int(s.netDir.Fd()), addr.String(), 0)
	_ = s.touched() // a failure leaves the stamp unwritten: the next Open rebuilds
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("releasing %s: %w", addr, pathErr("remove", s.netDir, addr.String(), err))
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
// Only regular files are ours: anything else with such a name is left.
func (s *Store) RemoveStale() error {
	if err := s.invalidate(); err != nil {
		return err
	}
	var errs []error
	for _, d := range []struct {
		dir    *os.File
		prefix string
	}{
		{s.netDir, tmpPrefix}, {s.metaDir, indexTmpPrefix}, {s.ownersDir, indexTmpPrefix},
	} {
		entries, err := listAt(d.dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing %s: %w", d.dir.Name(), err))
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), d.prefix) && e.Type().IsRegular() {
				errs = append(errs, removeAt(d.dir, e.Name()))
			}
		}
	}
	return errors.Join(append(errs, s.touched())...)
}

func timeOf(ts unix.Timespec) time.Time { return time.Unix(ts.Unix()) }
