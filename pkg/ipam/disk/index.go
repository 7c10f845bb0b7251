package disk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
)

// The index lives in a dot-directory beside the records. The reference
// plugin reads every file under the network directory, subdirectories
// included, and takes one for a record of container C when its trimmed
// content equals "C\r\nifname" or "C"; the index files are JSON objects,
// whose first character "{" cannot start a container ID (the runtime
// validates IDs as [a-zA-Z0-9][a-zA-Z0-9_.-]*), so it never matches, reads or
// removes one. Shell loops over <network>/* skip dot-names too.
const (
	metaName   = ".cnisuite" // the index directory inside the network's
	ownersName = "owners"    // one file per attachment, named by ownerKey
	stampName  = "index"     // what the directory looked like when the index was last right
	// indexTmpPrefix starts index files being written; never a key.
	indexTmpPrefix = ".tmp-"
	entryVersion   = 1
	// maxEntry bounds what is read of an index file: an attachment holds
	// one address per range set, a few hundred bytes each at most.
	maxEntry = 64 << 10
	maxStamp = 1 << 10 // a stamp is about 150 bytes
)

// errStale is returned when an index entry disagrees with the records: the
// caller rebuilds the index and asks again.
var errStale = errors.New("the reservation index disagrees with the records")

// entry is the index file of one attachment: the addresses it holds and, for
// each, what proves its owner gone later.
type entry struct {
	Version int    `json:"v"`
	ID      string `json:"id"`
	IfName  string `json:"ifname,omitempty"`
	Addrs   []held `json:"addrs"`
}

// held is one address of an entry. Rec is the inode of the record this store
// linked for it: the netns fields describe that record only, so a record
// replaced behind our back (by the reference plugin, by hand) never inherits
// them. Rec is 0 for records found, not written, by this store.
type held struct {
	IP    netip.Addr `json:"ip"`
	Rec   uint64     `json:"rec,omitempty"`
	Netns string     `json:"netns,omitempty"`
	NsDev uint64     `json:"nsDev,omitempty"`
	NsIno uint64     `json:"nsIno,omitempty"`
	NsID  uint64     `json:"nsId,omitempty"`
	// The nsid of the namespace in the node's namespace, and which namespace
	// that is; a zero NSID is stored only with a NodeIno.
	NSID    int32  `json:"nsid,omitempty"`
	NodeIno uint64 `json:"nodeIno,omitempty"`
	NodeID  uint64 `json:"nodeId,omitempty"`
}

func (e *entry) owner() ipam.Owner { return ipam.Owner{ContainerID: e.ID, IfName: e.IfName} }

// find returns the address's item of the entry, or nil.
func (e *entry) find(a netip.Addr) *held {
	if e == nil {
		return nil
	}
	for i := range e.Addrs {
		if e.Addrs[i].IP == a {
			return &e.Addrs[i]
		}
	}
	return nil
}

// with returns a copy of e (a new entry for o when e is nil) holding h, in
// address order; entries are never changed in place, so a caller can write
// the old one back to undo.
func (e *entry) with(o ipam.Owner, h held) *entry {
	n := &entry{Version: entryVersion, ID: o.ContainerID, IfName: o.IfName}
	if e != nil {
		n.Addrs = slices.DeleteFunc(slices.Clone(e.Addrs), func(x held) bool { return x.IP == h.IP })
	}
	n.Addrs = append(n.Addrs, h)
	slices.SortFunc(n.Addrs, func(a, b held) int { return a.IP.Compare(b.IP) })
	return n
}

// without returns a copy of e lacking a (nil when e is nil).
func (e *entry) without(a netip.Addr) *entry {
	if e == nil {
		return nil
	}
	n := *e
	n.Addrs = slices.DeleteFunc(slices.Clone(e.Addrs), func(x held) bool { return x.IP == a })
	return &n
}

func (h held) netns() ipam.Netns {
	return ipam.Netns{Path: h.Netns, Dev: h.NsDev, Ino: h.NsIno, ID: h.NsID, NSID: h.NSID, NodeIno: h.NodeIno, NodeID: h.NodeID}
}

// heldFor is the index item of addr reserved in record rec for a claim
// whose owner lives in n.
func heldFor(addr netip.Addr, rec uint64, n ipam.Netns) held {
	return held{IP: addr, Rec: rec, Netns: n.Path, NsDev: n.Dev, NsIno: n.Ino, NsID: n.ID, NSID: n.NSID, NodeIno: n.NodeIno, NodeID: n.NodeID}
}

// ownerKey names an attachment's index file: a hash, since container IDs and
// interface names may be longer, or spelt otherwise, than a file name allows.
func ownerKey(o ipam.Owner) string {
	sum := sha256.Sum256([]byte(o.ContainerID + "\x00" + o.IfName))
	return hex.EncodeToString(sum[:16])
}

func isOwnerKey(name string) bool {
	_, err := hex.DecodeString(name)
	return err == nil && len(name) == 32 && strings.ToLower(name) == name
}

// formatEntry is the content of an index file.
func formatEntry(e *entry) []byte {
	data, _ := json.Marshal(e) // strings, integers and addresses: cannot fail
	return data
}

// parseEntry reads an index file and checks everything a reader relies on:
// the version, an owner a record could name, and canonical, distinct
// addresses (each the name of a record).
func parseEntry(data []byte) (*entry, error) {
	if len(data) > maxEntry {
		return nil, fmt.Errorf("index entry of %d bytes, more than %d", len(data), maxEntry)
	}
	var e entry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("index entry: %w", err)
	}
	if e.Version != entryVersion {
		return nil, fmt.Errorf("index entry version %d, want %d", e.Version, entryVersion)
	}
	o, err := ParseRecord(FormatRecord(e.owner()))
	if err != nil || o != e.owner() {
		return nil, fmt.Errorf("index entry names owner %q/%q, which no record can hold", e.ID, e.IfName)
	}
	for i, h := range e.Addrs {
		if !h.IP.IsValid() || h.IP.Zone() != "" || h.IP.Unmap() != h.IP {
			return nil, fmt.Errorf("index entry address %q is not the name of a record", h.IP)
		}
		if strings.ContainsRune(h.Netns, 0) {
			return nil, fmt.Errorf("index entry netns path %q holds a NUL", h.Netns)
		}
		if slices.ContainsFunc(e.Addrs[:i], func(x held) bool { return x.IP == h.IP }) {
			return nil, fmt.Errorf("index entry lists %s twice", h.IP)
		}
	}
	return &e, nil
}

// bootID tells one boot from the next: a stamp from another boot is never
// trusted, whatever a crash left of the directory.
var bootID = sync.OnceValue(func() string {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(data))
})

// stamp describes the network directory: any entry created, removed or
// renamed in it (by us, by the reference plugin, by hand) changes its mtime
// and ctime. The index is trusted only while the stamp written after our
// last change still matches.
func stamp(dir *os.File) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		return nil, fmt.Errorf("looking at %s: %w", dir.Name(), err)
	}
	return fmt.Appendf(nil, `{"v":%d,"boot":%q,"dev":%d,"ino":%d,"mtime":%d,"ctime":%d}`,
		entryVersion, bootID(), st.Dev, st.Ino, st.Mtim.Nano(), st.Ctim.Nano()), nil
}
