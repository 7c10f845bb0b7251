package link

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TxChecksum reports whether transmit checksum offload is on for ifname,
// in the calling thread's network namespace: the ethtool ioctl, so that no
// ethtool binary is needed.
func TxChecksum(ifname string) (bool, error) {
	return ethtool(ifname, unix.ETHTOOL_GTXCSUM, 0)
}

// SetTxChecksum turns transmit checksum offload of ifname on or off, as
// `ethtool -K IFNAME tx on|off` does.
func SetTxChecksum(ifname string, on bool) error {
	data := uint32(0)
	if on {
		data = 1
	}
	_, err := ethtool(ifname, unix.ETHTOOL_STXCSUM, data)
	return err
}

// ifreqData is struct ifreq with its union as a pointer, for SIOCETHTOOL.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct{ cmd, data uint32 }

// ethtool runs a get (or, with a set command, a set of data) ethtool value
// command on ifname and returns the value.
func ethtool(ifname string, cmd, data uint32) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	v := ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	if len(ifname) >= len(ifr.name) {
		return false, errors.New("interface name too long")
	}
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&v)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return false, fmt.Errorf("SIOCETHTOOL on %s: %w", ifname, e)
	}
	return v.data != 0, nil
}
