package nat

import (
	"unsafe"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The netfilter netlink sockets of this package are released without
// making their process wait for the kernel's clean-up.
//
// When the last reference to a netfilter netlink socket goes, nf_tables
// flushes its destroy work, which frees what the namespace's transactions
// deleted after an RCU grace period (10-15 ms on a 2-vCPU VM): a plugin
// whose transaction deleted rules sleeps that long in close() or in exit,
// after its rules are gone. So each socket is also registered as a fixed
// file of a one-entry io_uring that then holds the last reference: closing
// the ring hands its teardown, and the socket's release with it, to a
// kernel worker. Where io_uring is unavailable (an old kernel, the
// io_uring_disabled sysctl, a seccomp filter) close waits as before. Only
// the timing differs: every change was committed before either close.

// NFTConn is a lasting nftables connection whose release does not wait.
type NFTConn struct {
	*nftables.Conn
	raw  *netlink.Conn // the same socket, for what the library cannot ask
	ring holder
}

// DialNFT opens an NFTConn; Close releases it.
func DialNFT() (*NFTConn, error) {
	c := &NFTConn{}
	conn, err := nftables.New(nftables.AsLasting(), nftables.WithSockOptions(func(nc *netlink.Conn) error {
		c.raw = nc
		return c.ring.hold(nc)
	}))
	if err != nil {
		c.ring.release()
		return nil, err
	}
	c.Conn = conn
	return c, nil
}

// Close closes the socket, then the ring that holds it.
func (c *NFTConn) Close() {
	_ = c.CloseLasting()
	c.ring.release()
}

// holder keeps io_urings that hold sockets; release closes them, after
// the sockets' own descriptors are closed.
type holder struct{ rings []int }

// ioringRegisterFiles is IORING_REGISTER_FILES.
const ioringRegisterFiles = 2

// hold registers c's socket in a new ring; on any failure c is released
// the ordinary way, so it never fails (it is an nftables.SockOption).
func (h *holder) hold(c *netlink.Conn) error {
	var params [120]byte // struct io_uring_params, zero: no flags
	r, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	if errno != 0 {
		return nil
	}
	ring := int(r)
	raw, err := c.SyscallConn()
	if err != nil {
		unix.Close(ring)
		return nil
	}
	regErr := unix.EBADF
	if err := raw.Control(func(fd uintptr) {
		fds := [1]int32{int32(fd)}
		_, _, regErr = unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(ring), ioringRegisterFiles, uintptr(unsafe.Pointer(&fds[0])), 1, 0, 0)
	}); err != nil || regErr != 0 {
		unix.Close(ring)
		return nil
	}
	h.rings = append(h.rings, ring)
	return nil
}

func (h *holder) release() {
	for _, r := range h.rings {
		unix.Close(r)
	}
	h.rings = nil
}
