package cnictl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// reset removes only the files it proves the suite's by their content and
// layout, never by a name: a dataDir, subnetFile or cache dir may be shared
// with other programs, or name /var/lib by mistake. A file is removed by its
// name in a directory opened without following symlinks, and only while that
// name still names the file proved; a directory only once emptied of what was
// proved, by rmdir, which fails on anything else. Nothing is removed
// recursively. What looked like a candidate but is kept is listed with why.

// Bounds of what reset reads of a candidate: the most the suite writes there.
const (
	maxRecord     = 4096                    // a host-local record or last_reserved_ip note
	maxIndexFile  = 64 << 10                // an index entry or stamp of pkg/ipam/disk
	maxCacheEntry = 2 * netconf.MaxConfSize // libcni's cache: a configuration and its result
)

// fileID identifies a file: a name is removed only while it names the file
// that was proved.
type fileID struct{ dev, ino uint64 }

func idOf(info fs.FileInfo) fileID {
	st := info.Sys().(*syscall.Stat_t)
	return fileID{uint64(st.Dev), st.Ino}
}

// doomed is a file, or a directory with its proved entries, to remove.
type doomed struct {
	path string
	id   fileID
	dir  bool
	sub  []doomed // a directory's entries
}

// remove removes d from its parent directory, opened by the path the
// configuration or a flag gave (an operator's symlink there is followed).
func (d doomed) remove() error {
	parent, err := unix.Open(filepath.Dir(d.path), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", filepath.Dir(d.path), err)
	}
	defer unix.Close(parent)
	return d.removeAt(parent)
}

// removeAt removes d from the directory open as parent, if its name still
// names the file proved; a directory goes once its proved entries are gone
// and only if nothing else is left in it.
func (d doomed) removeAt(parent int) error {
	name := filepath.Base(d.path)
	var st unix.Stat_t
	err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking at %s: %w", d.path, err)
	}
	if (fileID{uint64(st.Dev), st.Ino}) != d.id {
		return fmt.Errorf("kept %s: replaced since it was looked at; run reset again", d.path)
	}
	if !d.dir {
		return removed(d.path, unix.Unlinkat(parent, name, 0))
	}
	if err := d.emptyAt(parent, name); err != nil {
		return err
	}
	err = unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
	if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("kept %s: entries appeared in it since it was looked at; run reset again", d.path)
	}
	return removed(d.path, err)
}

// emptyAt removes the proved entries of the directory d, opened without
// following a symlink and checked to be the one proved.
func (d doomed) emptyAt(parent int, name string) error {
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", d.path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || (fileID{uint64(st.Dev), st.Ino}) != d.id {
		return fmt.Errorf("kept %s: replaced since it was looked at; run reset again", d.path)
	}
	var errs []error
	for _, s := range d.sub {
		errs = append(errs, s.removeAt(fd))
	}
	return errors.Join(errs...)
}

func removed(path string, err error) error {
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}

// prover proves one directory entry the suite's: what to remove, or why not.
type prover func(path string, e fs.DirEntry) (doomed, string)

// proveDir proves dir, a directory and not a symlink to one, when prove
// proves every entry of it.
func proveDir(dir string, prove prover) (doomed, string) {
	info, err := os.Lstat(dir)
	if err != nil {
		return doomed{}, err.Error()
	}
	if !info.IsDir() {
		return doomed{}, regfile.Kind(info.Mode()) + ", not a directory"
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return doomed{}, fmt.Sprintf("cannot be listed: %v", err)
	}
	d := doomed{path: dir, id: idOf(info), dir: true}
	for _, e := range entries {
		s, why := prove(filepath.Join(dir, e.Name()), e)
		if why != "" {
			return doomed{}, e.Name() + ": " + why
		}
		d.sub = append(d.sub, s)
	}
	return d, ""
}

// proveFile proves path the suite's when it is a regular file (not a
// symlink) of at most max bytes whose content ok accepts.
func proveFile(path string, max int64, ok func([]byte) bool, notOK string) (doomed, string) {
	data, info, err := regfile.Read(path, max, regfile.NoFollow)
	switch {
	case errors.Is(err, regfile.ErrNotRegular) && info != nil && !info.Mode().IsRegular():
		return doomed{}, regfile.Kind(info.Mode())
	case errors.Is(err, regfile.ErrTooLarge) && max == 0:
		return doomed{}, "not empty"
	case errors.Is(err, regfile.ErrTooLarge):
		return doomed{}, fmt.Sprintf("over the %d bytes the suite writes there", max)
	case err != nil:
		return doomed{}, err.Error()
	case !ok(data):
		return doomed{}, notOK
	}
	return doomed{path: path, id: idOf(info)}, ""
}

// proveStore proves dir a host-local network directory: host-local's lock
// and nothing but host-local's entries, in the layout of pkg/ipam/disk and
// the reference plugin (the tests build stores with pkg/ipam/disk, so that
// a change of that layout shows here).
func proveStore(dir string) (doomed, string) {
	d, why := proveDir(dir, storeEntry)
	if why == "" && !slices.ContainsFunc(d.sub, func(s doomed) bool { return filepath.Base(s.path) == "lock" }) {
		why = "holds no host-local lock file"
	}
	return d, why
}

// storeEntry: the lock (empty), records named by their address, the
// round-robin notes, the index, and temporary files a killed writer left.
func storeEntry(path string, e fs.DirEntry) (doomed, string) {
	name := e.Name()
	switch {
	case name == "lock":
		return proveFile(path, 0, func([]byte) bool { return true }, "")
	case name == ".cnisuite":
		return proveDir(path, indexEntry)
	case isAddrName(name):
		return proveFile(path, maxRecord, isRecord, "named by an address but holds no reservation record")
	case numbered(name, "last_reserved_ip."):
		return proveFile(path, maxRecord, isAddress, "holds no address")
	case numbered(name, ".reserve-"):
		return proveFile(path, maxRecord, func(b []byte) bool { return isRecord(b) || isAddress(b) }, "holds neither a record nor an address")
	}
	return doomed{}, "not a name host-local uses"
}

// indexEntry: the index stamp and the owners directory of .cnisuite.
func indexEntry(path string, e fs.DirEntry) (doomed, string) {
	switch name := e.Name(); {
	case name == "owners":
		return proveDir(path, ownerEntry)
	case name == "index", numbered(name, ".tmp-"):
		return proveFile(path, maxIndexFile, isIndexJSON, "not the index's JSON")
	}
	return doomed{}, "not a name of host-local's index"
}

// ownerEntry: one index entry per attachment, named by its key.
func ownerEntry(path string, e fs.DirEntry) (doomed, string) {
	if !isOwnerKey(e.Name()) && !numbered(e.Name(), ".tmp-") {
		return doomed{}, "not named by an owner key"
	}
	return proveFile(path, maxIndexFile, isIndexJSON, "not an index entry")
}

// isAddrName: an address spelt as host-local names its records.
func isAddrName(name string) bool {
	a, err := netip.ParseAddr(name)
	return err == nil && a.String() == name
}

// numbered: prefix then decimal digits (a set number, a temporary name).
func numbered(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	_, err := strconv.ParseUint(rest, 10, 64)
	return ok && err == nil
}

func isOwnerKey(name string) bool {
	return len(name) == 32 && strings.Trim(name, "0123456789abcdef") == ""
}

func isRecord(data []byte) bool {
	_, err := disk.ParseRecord(data)
	return err == nil
}

func isAddress(data []byte) bool {
	_, err := netip.ParseAddr(strings.TrimSpace(string(data)))
	return err == nil
}

// isIndexJSON: a JSON object with the index's version, as both the stamp
// and the owner entries are; or empty, as a verb that was killed or failed
// leaves the stamp (emptied before a change, written again after it) or a
// temporary file (created, not yet written).
func isIndexJSON(data []byte) bool {
	var v struct {
		V int `json:"v"`
	}
	return len(data) == 0 || json.Unmarshal(data, &v) == nil && v.V > 0
}

// planFiles finds the state files: host-local stores (refusing while one
// has a live owner), the flannel plugin's saved configurations, libcni's
// cached results of the configured networks, subnet.env, portmap's lock;
// and lists what it keeps of the candidates.
func (p *resetPlan) planFiles(o resetOpts, cfg *suiteConfs) error {
	var files []doomed
	var what []string
	found := func(kind string, ds ...doomed) {
		for _, d := range ds {
			files = append(files, d)
			what = append(what, kind+" "+d.path)
		}
	}
	for _, dir := range cfg.dataDirs {
		stores, err := p.planStores(dir)
		if err != nil {
			return err
		}
		found("host-local store", stores...)
	}
	for _, dir := range cfg.flannelDirs {
		found("flannel saved config", p.savedConfs(dir)...)
	}
	found("cached result", p.cachedResults(o.cacheDir, cfg.networks)...)
	for _, f := range cfg.subnetFiles {
		found("file", p.single(f, envfile.MaxSize, isSubnetEnv, "not a subnet.env with a subnet")...)
	}
	found("file", p.single(o.lockFile, 0, func([]byte) bool { return true }, "")...)
	p.add(step{what: what, do: func() error { return removeAll(files) }})
	return nil
}

func removeAll(ds []doomed) error {
	var errs []error
	for _, d := range ds {
		errs = append(errs, d.remove())
	}
	return errors.Join(errs...)
}

func (p *resetPlan) keep(path, why string) {
	p.kept = append(p.kept, path+": "+why)
}

// single proves one file named by a flag or a configuration; a missing one
// is no candidate.
func (p *resetPlan) single(path string, max int64, ok func([]byte) bool, notOK string) []doomed {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	d, why := proveFile(path, max, ok, notOK)
	if why != "" {
		p.keep(path, why)
		return nil
	}
	return []doomed{d}
}

// isSubnetEnv: what envfile parses, holding a subnet (a file of other keys
// parses too: unknown keys are ignored).
func isSubnetEnv(data []byte) bool {
	e, err := envfile.Parse(data)
	return err == nil && (e.Subnet.IsValid() || e.IPv6Subnet.IsValid())
}

// planStores proves each entry of dataDir a host-local store, and notes the
// containers whose reservation's namespace is still in place: pods still
// attached. A store is surveyed (which may rebuild its index) before it is
// proved again for removal.
func (p *resetPlan) planStores(dataDir string) ([]doomed, error) {
	entries, err := os.ReadDir(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading host-local's dataDir: %w; pass the one in use with --data-dir", err)
	}
	var out []doomed
	for _, e := range entries {
		dir := filepath.Join(dataDir, e.Name())
		if _, why := proveStore(dir); why != "" {
			p.keep(dir, "not a host-local store: "+why)
			continue
		}
		vs, _ := survey(dataDir, e.Name(), nil) // a store that cannot be read proves no pod
		p.pods = append(p.pods, liveOwners(e.Name(), vs)...)
		d, why := proveStore(dir)
		if why != "" {
			p.keep(dir, "not a host-local store: "+why)
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

// savedConfs proves the flannel plugin's saved delegate configurations:
// regular files holding a JSON object with a cniVersion.
func (p *resetPlan) savedConfs(dir string) []doomed {
	entries, _ := os.ReadDir(dir)
	var out []doomed
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		d, why := proveFile(path, netconf.MaxConfSize, func(data []byte) bool {
			var c struct {
				CNIVersion string `json:"cniVersion"`
			}
			return json.Unmarshal(data, &c) == nil && c.CNIVersion != ""
		}, "not a JSON configuration with a cniVersion")
		if why != "" {
			p.keep(path, "not a flannel saved configuration: "+why)
			continue
		}
		out = append(out, d)
	}
	return out
}

// cachedResults proves libcni's cache entries of the given networks; those
// of other networks are not candidates, and are not listed.
func (p *resetPlan) cachedResults(cacheDir string, networks []string) []doomed {
	dir := filepath.Join(cacheDir, "results")
	entries, _ := os.ReadDir(dir)
	var out []doomed
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		var network string
		d, why := proveFile(path, maxCacheEntry, func(data []byte) bool {
			var c struct {
				Kind        string `json:"kind"`
				NetworkName string `json:"networkName"`
			}
			ok := json.Unmarshal(data, &c) == nil && c.Kind == "cniCacheV1"
			network = c.NetworkName
			return ok
		}, "not a libcni cache entry")
		switch {
		case why != "":
			p.keep(path, "not a cached result: "+why)
		case slices.Contains(networks, network):
			out = append(out, d)
		}
	}
	return out
}
