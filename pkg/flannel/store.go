package flannel

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
)

// readSaved reads a file of dataDir, no symlink and no larger than the
// configuration it would hold.
func readSaved(path string) ([]byte, error) {
	data, _, err := regfile.Read(path, netconf.MaxConfSize, regfile.NoFollow)
	return data, err
}

// unusable tells the error of a file that save never writes: a symlink, a
// FIFO, a directory, one over the configuration limit.
func unusable(err error) bool {
	return errors.Is(err, regfile.ErrNotRegular) || errors.Is(err, regfile.ErrTooLarge)
}

// store keeps each attachment's rendered delegate configuration in dataDir,
// so that DEL, CHECK and GC hand the delegate what ADD handed it, even after
// subnet.env changed or vanished.
//
// flannel names the file after the container ID alone. Two attachments of
// one container (a pod with a second interface on another flannel network
// sharing the dataDir) then overwrite each other, and a GC's valid list,
// which names (containerID, ifname) pairs, cannot be matched exactly. The
// suite names the file "<containerID>-<ifname>", as libcni names its result
// cache, and still reads flannel's "<containerID>" for attachments made
// before the node switched plugins.
type store struct{ dir string }

func (s store) path(containerID, ifName string) string {
	return filepath.Join(s.dir, containerID+"-"+ifName)
}

func (s store) legacyPath(containerID string) string { return filepath.Join(s.dir, containerID) }

// save writes the configuration atomically (a reader sees all of it or
// none), readable by root only as flannel does, since a delegate's
// configuration may carry credentials. Not fsynced, unlike flannel's: only
// a kernel crash or power loss can drop the file, and either ends the
// attachment's container too; a DEL that then finds no file renders the
// configuration from subnet.env.
func (s store) save(containerID, ifName string, data []byte) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return netconf.Errorf(netconf.CodeIO, "creating dataDir %s: %w", s.dir, err)
	}
	path := s.path(containerID, ifName)
	if err := regfile.ReplaceUnsynced(path, data, 0o600); err != nil {
		return netconf.Errorf(netconf.CodeIO, "saving the delegate configuration as %s: %w", path, err)
	}
	return nil
}

// load returns the saved configuration of an attachment and its path, or
// an error wrapping fs.ErrNotExist when there is none. What save never
// writes (a symlink, a FIFO, a directory, a file over the configuration
// limit) is refused unread with code 6 (see unusable).
func (s store) load(containerID, ifName string) ([]byte, string, error) {
	for _, path := range []string{s.path(containerID, ifName), s.legacyPath(containerID)} {
		data, err := readSaved(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if unusable(err) {
			return nil, path, netconf.Errorf(netconf.CodeDecoding, "the saved delegate configuration cannot be used: %w", err)
		}
		if err != nil {
			return nil, path, netconf.Errorf(netconf.CodeIO, "reading the saved delegate configuration: %w", err)
		}
		return data, path, nil
	}
	return nil, "", fmt.Errorf("no saved delegate configuration for %s/%s in %s: %w", containerID, ifName, s.dir, fs.ErrNotExist)
}

// remove deletes a saved configuration; one already gone is removed.
func (s store) remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return netconf.Errorf(netconf.CodeIO, "removing the saved delegate configuration: %w", err)
	}
	return nil
}

// forget removes what the store holds for an attachment whose DEL is done:
// its saved configuration at path ("" when there was none) and the
// temporary files of its saves, which a flannel killed in the middle of an
// ADD's save leaves behind (regfile.RemoveTemps).
func (s store) forget(containerID, ifName, path string) error {
	var err error
	if path != "" {
		err = s.remove(path)
	}
	if terr := regfile.RemoveTemps(s.path(containerID, ifName)); terr != nil {
		err = errors.Join(err, netconf.Errorf(netconf.CodeIO, "removing the temporary files of a saved delegate configuration: %w", terr))
	}
	return err
}

// prune removes the saved configurations of network whose attachment is not
// in valid, and temporary files left by a writer that died. Files of other
// networks sharing the dataDir are left alone; unreadable ones are removed,
// as no DEL could use them.
func (s store) prune(network string, valid []netconf.Attachment) (removed []string, err error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, netconf.Errorf(netconf.CodeIO, "listing dataDir: %w", err)
	}
	keep := map[string]bool{}
	for _, a := range valid {
		keep[filepath.Base(s.path(a.ContainerID, a.IfName))] = true
		keep[filepath.Base(s.legacyPath(a.ContainerID))] = true
	}
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || keep[e.Name()] || !s.ownedBy(e, network) {
			continue
		}
		if err := s.remove(filepath.Join(s.dir, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// ownedBy tells whether a dataDir entry is network's to collect: a saved
// configuration naming it or unreadable, or a stale temporary file.
func (s store) ownedBy(e fs.DirEntry, network string) bool {
	if strings.HasPrefix(e.Name(), ".") {
		return regfile.IsStaleTemp(e)
	}
	data, err := readSaved(filepath.Join(s.dir, e.Name()))
	if err != nil {
		return false // gone meanwhile, unreadable to root, or not a configuration's size: not ours
	}
	var saved struct {
		Name string `json:"name"`
	}
	return json.Unmarshal(data, &saved) != nil || saved.Name == network
}
