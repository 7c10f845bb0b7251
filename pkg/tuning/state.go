package tuning

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/utils"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
)

// record is the file an ADD leaves for its DEL, named and laid out as the
// reference's (<dataDir>/<containerID>_<ifname>.json): the values ADD
// changed, as they were. Network is ours, and ignored by the reference: GC
// removes only the records of its own network, since networks share the
// directory and the name says nothing of the network.
type record struct {
	attrs
	Network string `json:"network,omitempty"`
}

// errBadRecord marks a record that cannot be read as one: it can restore
// nothing.
var errBadRecord = errors.New("not a record of tuning")

// maxRecord bounds a record read; one is a few hundred bytes.
const maxRecord = 64 << 10

// recordPath names the attachment's record. The container ID and ifname
// are part of the name, so they are checked first (as the runtime's skel
// does for a binary).
func recordPath(dataDir, containerID, ifName string) (string, error) {
	if e := utils.ValidateContainerID(containerID); e != nil {
		return "", netconf.Errorf(netconf.CodeInvalidEnv, "CNI_CONTAINERID %q: %s; pass the container's ID", containerID, e.Msg)
	}
	if err := checkIfName(ifName); err != nil {
		return "", err
	}
	return filepath.Join(dataDir, recordName(containerID, ifName)), nil
}

// recordName is the reference's name for an attachment's record.
func recordName(containerID, ifName string) string { return containerID + "_" + ifName + ".json" }

// writeRecord saves r at path, whole or not at all. It is not synced: a
// crash that could lose it ends the pod's namespace, and with it what the
// record would restore.
func writeRecord(path string, r *record) error {
	data, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	err = os.MkdirAll(filepath.Dir(path), 0o700)
	if err == nil {
		err = regfile.ReplaceUnsynced(path, data, 0o600)
	}
	if err != nil {
		return netconf.Errorf(netconf.CodeIO, "saving the values ADD changes, for DEL to restore: %w; make \"dataDir\" (default %s) a writable directory", err, DefaultDataDir)
	}
	return nil
}

// readRecord reads the record at path: nil when there is none, an error
// wrapping errBadRecord when the file is no record, regfile.ErrNotRegular
// when it is no file.
func readRecord(path string) (*record, error) {
	data, _, err := regfile.Read(path, maxRecord, regfile.NoFollow)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case errors.Is(err, regfile.ErrTooLarge):
		return nil, fmt.Errorf("%w: %w", errBadRecord, err)
	case err != nil:
		return nil, err
	}
	r := &record{}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, errBadRecord, err)
	}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, errBadRecord, err)
	}
	return r, nil
}

// check refuses values no ADD saves: a record is trusted no further than
// the directory it sits in, and a sysctl of it must stay under net/.
func (r *record) check() error {
	if _, err := net.ParseMAC(r.Mac); r.Mac != "" && err != nil {
		return err
	}
	if r.MTU < 0 || (r.TxQLen != nil && *r.TxQLen < 0) {
		return errors.New("negative MTU or txQLen")
	}
	for _, s := range r.Sysctl {
		if !strings.HasPrefix(s.Key, "net/") || slices.Contains(strings.Split(s.Key, "/"), "..") {
			return fmt.Errorf("sysctl %q is not a net/ key", s.Key)
		}
	}
	return nil
}

// removeRecord removes the record at path; one already gone is success.
func removeRecord(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}
