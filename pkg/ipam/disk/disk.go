// Package disk is the host-local reservation store: one file per reserved
// address in <dataDir>/<network>/, named by the address and holding
// "containerID\r\nifname"; last_reserved_ip.<set> notes for round-robin; and a
// "lock" file flocked for the whole verb. The layout is the reference
// plugin's, so a node can switch between the two with its reservations kept.
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
	dir  string
	lock *os.File
}

var _ ipam.Store = (*Store)(nil)

// Open creates <dataDir>/<network> when missing and takes its lock; it blocks
// while another process (ours or the reference plugin) holds it. Close
// releases it.
func Open(dataDir, network string) (*Store, error) {
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	if network == "" || network == "." || network == ".." || strings.ContainsAny(network, "/\x00") {
		return nil, netconf.Invalid("network name %q cannot name a directory under %s; use a name without '/' that is not '.' or '..'", network, dataDir)
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
	return &Store{dir: dir, lock: f}, nil
}

// Close releases the lock.
func (s *Store) Close() error { return s.lock.Close() }

// Dir is the network's reservation directory, for messages.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(a netip.Addr) string { return filepath.Join(s.dir, a.String()) }

// Reserve writes the record to a temporary file, syncs it and links it to the
// address's name: link fails when the name exists, so a reservation is never
// overwritten, and neither a killed process nor a kernel crash can leave an
// empty or partial record (the data is on disk before the name exists).
//
// The directory is not synced: a kernel crash that loses the new name also
// ends the container that held it, so no live container can lose its address
// that way, and it saves one of the two fsyncs of an ADD (make bench).
func (s *Store) Reserve(addr netip.Addr, owner ipam.Owner, set int) (bool, error) {
	name := s.path(addr)
	// Skip the write for addresses visibly taken: a walk over a busy range
	// meets many. The link below stays the authoritative check.
	if _, err := os.Lstat(name); err == nil {
		return false, nil
	}
	tmp, err := s.writeTemp(FormatRecord(owner), true)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("reserving %s: %w", addr, err)
	}
	// On failure the record is taken back, so that a false result always
	// means nothing changed.
	if err := s.writeLastReserved(set, addr); err != nil {
		os.Remove(name)
		return false, err
	}
	return true, nil
}

// writeTemp writes data to a new temporary file in the directory (mode 0600,
// as CreateTemp makes it), synced when asked, and returns its path.
func (s *Store) writeTemp(data []byte, sync bool) (path string, retErr error) {
	f, err := os.CreateTemp(s.dir, tmpPrefix)
	if err != nil {
		return "", fmt.Errorf("creating a file in %s: %w", s.dir, err)
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
		return "", fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return "", fmt.Errorf("syncing %s: %w", f.Name(), err)
		}
	}
	return f.Name(), nil
}

// writeLastReserved replaces the round-robin note by rename so that readers
// never see it half written.
func (s *Store) writeLastReserved(set int, addr netip.Addr) error {
	tmp, err := s.writeTemp([]byte(addr.String()), false)
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
	res, err := s.read(addr)
	if errors.Is(err, fs.ErrNotExist) {
		return res, false, nil
	}
	return res, err == nil, err
}

// read returns the reservation of addr; a corrupt record is not an error.
func (s *Store) read(addr netip.Addr) (ipam.Reservation, error) {
	res := ipam.Reservation{Addr: addr}
	f, err := os.Open(s.path(addr))
	if err != nil {
		return res, fmt.Errorf("reading the reservation of %s: %w", addr, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return res, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	res.Owner, res.Corrupt = ParseRecord(data)
	return res, nil
}

// All reads every record. A file is a record when its name is an address
// spelt the way the reference spells it; the lock, the notes and temporary
// files never are.
func (s *Store) All() ([]ipam.Reservation, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", s.dir, err)
	}
	var out []ipam.Reservation
	var errs []error
	for _, e := range entries {
		a, err := netip.ParseAddr(e.Name())
		if err != nil || a.String() != e.Name() || !e.Type().IsRegular() {
			continue
		}
		res, err := s.read(a)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released between listing and reading
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, res)
	}
	return out, errors.Join(errs...)
}

// ByOwner lists the addresses the attachment holds.
func (s *Store) ByOwner(owner ipam.Owner) ([]netip.Addr, error) {
	all, err := s.All()
	var out []netip.Addr
	for _, r := range all {
		if r.Corrupt == nil && r.Owner.Matches(owner) {
			out = append(out, r.Addr)
		}
	}
	return out, err
}

// ReleaseByOwner frees the attachment's addresses; see ipam.Store.
func (s *Store) ReleaseByOwner(owner ipam.Owner) ([]netip.Addr, error) {
	all, err := s.All()
	errs := []error{err}
	var exact, legacy []netip.Addr
	for _, r := range all {
		switch {
		case r.Corrupt != nil || r.Owner.ContainerID != owner.ContainerID:
		case r.Owner == owner:
			exact = append(exact, r.Addr)
		case r.Owner.Legacy():
			legacy = append(legacy, r.Addr)
		}
	}
	if len(exact) == 0 {
		exact = legacy
	}
	var released []netip.Addr
	for _, a := range exact {
		if err := s.Release(a); err != nil {
			errs = append(errs, err)
			continue
		}
		released = append(released, a)
	}
	return released, errors.Join(errs...)
}

// Release removes the record of addr. Removal is not synced: a record that
// comes back after a crash holds an address GC can reclaim, it never gives
// one address to two containers.
func (s *Store) Release(addr netip.Addr) error {
	if err := os.Remove(s.path(addr)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("releasing %s: %w", addr, err)
	}
	return nil
}

// RemoveStale deletes temporary files left by a process that died while
// writing. Every writer holds the lock, so while we hold it none is in use.
func (s *Store) RemoveStale() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", s.dir, err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
