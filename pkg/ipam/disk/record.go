package disk

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cnisuite/cni/pkg/ipam"
)

// lineBreak separates the container ID from the interface name in a record,
// as the reference writes it.
const lineBreak = "\r\n"

// maxRecord bounds what is read from a record: a container ID and an ifname
// are a few dozen bytes; anything far larger is not a record.
const maxRecord = 4096

// ErrCorrupt is wrapped by the error of a record that names no owner.
var ErrCorrupt = errors.New("corrupt reservation record")

// FormatRecord is the content of a reservation file.
func FormatRecord(o ipam.Owner) []byte {
	return []byte(strings.TrimSpace(o.ContainerID) + lineBreak + o.IfName)
}

// CheckOwner refuses an owner whose record would be longer than a reader
// takes (a container ID of thousands of bytes): written, it could never be
// read back, and its address never released.
func CheckOwner(o ipam.Owner) error {
	// len(FormatRecord(o)), without building it: ParseRecord checks every
	// record it reads.
	if n := len(strings.TrimSpace(o.ContainerID)) + len(lineBreak) + len(o.IfName); n > maxRecord {
		return fmt.Errorf("the record of container %.32q... would be %d bytes, more than the %d a reservation record holds", o.ContainerID, n, maxRecord)
	}
	return nil
}

// ParseRecord reads a reservation file: "containerID\r\nifname", or only
// "containerID" as old reference versions wrote it. Surrounding white space is
// ignored as the reference ignores it. Control characters cannot come from a
// valid container ID or ifname, so a record holding them is corrupt.
func ParseRecord(data []byte) (ipam.Owner, error) {
	if len(data) > maxRecord {
		return ipam.Owner{}, fmt.Errorf("%w: %d bytes, more than a record can hold", ErrCorrupt, len(data))
	}
	id, ifname, _ := strings.Cut(strings.TrimSpace(string(data)), lineBreak)
	id = strings.TrimSpace(id)
	if strings.TrimSpace(string(data)) == "" {
		return ipam.Owner{}, fmt.Errorf("%w: %w", ErrCorrupt, ipam.ErrEmptyRecord)
	}
	if id == "" {
		return ipam.Owner{}, fmt.Errorf("%w: no container ID", ErrCorrupt)
	}
	if hasControl(id) || hasControl(ifname) {
		return ipam.Owner{}, fmt.Errorf("%w: control characters in %q", ErrCorrupt, data)
	}
	o := ipam.Owner{ContainerID: id, IfName: ifname}
	if err := CheckOwner(o); err != nil { // an ID-only record of nearly maxRecord bytes
		return ipam.Owner{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return o, nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}
