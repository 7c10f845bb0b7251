package vxlan

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// writer sends many rtnetlink requests in one datagram. The kernel handles
// a datagram's messages in turn and answers each with an error of its own
// sequence number; only the last asks for an ack (NLM_F_ACK), so that a
// batch whose writes all succeed costs one sendmsg and one short reply
// instead of a round trip per entry.
type writer struct {
	fd   int
	seq  uint32
	buf  []byte  // the batch being built
	at   []int   // where each message of buf starts
	why  []entry // what each message writes, for its error
	in   []byte  // replies
	errs errorList
}

// entry names one write in an error: a format and its arguments.
type entry struct {
	format string
	args   []any
	del    bool // a delete: an entry already gone is no error
}

// batchSize bounds the messages of one datagram. Every one may fail, and
// the kernel drops replies that do not fit the socket's receive buffer; 128
// error replies fit the default buffer (212992 bytes) with room to spare.
// From 16 up the size makes no measurable difference: the kernel's own work
// on each entry dominates.
const batchSize = 128

// openWriter opens a netlink socket in the calling thread's namespace.
func openWriter() (*writer, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	// Error replies without a copy of the request (smaller, so more fit
	// the receive buffer), but with the kernel's message when it has one.
	for _, opt := range []int{unix.NETLINK_CAP_ACK, unix.NETLINK_EXT_ACK} {
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.SOL_NETLINK, opt, 1)
		}
	}
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("setting up a netlink socket: %w", err)
	}
	return &writer{fd: fd, in: make([]byte, 1<<16)}, nil
}

func (w *writer) close() { unix.Close(w.fd) }

// add appends one request: a header of type typ with flags, the fixed part
// body, then attributes as type/value pairs. A full batch is sent at once,
// so that thousands of writes never sit in memory together.
func (w *writer) add(why entry, typ, flags uint16, body []byte, attrs ...attr) {
	start := len(w.buf)
	w.buf = binary.NativeEndian.AppendUint32(w.buf, 0) // length, set below
	w.buf = binary.NativeEndian.AppendUint16(w.buf, typ)
	w.buf = binary.NativeEndian.AppendUint16(w.buf, flags|unix.NLM_F_REQUEST)
	w.buf = binary.NativeEndian.AppendUint32(w.buf, 0) // sequence, set by flush
	w.buf = binary.NativeEndian.AppendUint32(w.buf, 0) // port: the kernel's
	w.buf = pad(append(w.buf, body...))
	for _, a := range attrs {
		w.buf = binary.NativeEndian.AppendUint16(w.buf, uint16(unix.SizeofRtAttr+len(a.value)))
		w.buf = binary.NativeEndian.AppendUint16(w.buf, a.typ)
		w.buf = pad(append(w.buf, a.value...))
	}
	binary.NativeEndian.PutUint32(w.buf[start:], uint32(len(w.buf)-start))
	w.at = append(w.at, start)
	w.why = append(w.why, why)
	if len(w.at) == batchSize {
		w.send()
	}
}

type attr struct {
	typ   uint16
	value []byte
}

func pad(b []byte) []byte {
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// flush sends the requests not sent yet and returns the errors of the
// failed ones since the last flush, joined.
func (w *writer) flush() error {
	if len(w.at) > 0 {
		w.send()
	}
	err := w.errs.err()
	w.errs = errorList{}
	return err
}

// send numbers the batch's messages, asks an ack of the last, sends them in
// one datagram and reads the replies up to the last one's.
func (w *writer) send() {
	base := w.seq + 1
	for i, start := range w.at {
		h := w.buf[start:]
		binary.NativeEndian.PutUint32(h[8:], base+uint32(i))
		if i == len(w.why)-1 {
			binary.NativeEndian.PutUint16(h[6:], binary.NativeEndian.Uint16(h[6:])|unix.NLM_F_ACK)
		}
	}
	w.seq += uint32(len(w.why))
	err := unix.Sendto(w.fd, w.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	if err != nil {
		for _, e := range w.why {
			w.errs.add(err, e.format, e.args...)
		}
	} else if err := w.replies(base); err != nil {
		w.errs.add(err, "reading the kernel's replies to %d writes", len(w.why))
	}
	w.buf, w.at, w.why = w.buf[:0], w.at[:0], w.why[:0]
}

// replies reads the errors of one datagram's messages until the reply of
// its last one. Replies to an earlier datagram, left queued when a read
// failed, are told apart by their sequence numbers and skipped.
func (w *writer) replies(base uint32) error {
	why := w.why
	for {
		n, _, err := unix.Recvfrom(w.fd, w.in, 0)
		if err != nil {
			return err // ENOBUFS: replies were dropped, the last one's maybe too
		}
		msgs, err := syscall.ParseNetlinkMessage(w.in[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			i := m.Header.Seq - base // wraps around to a large number for an earlier batch
			if m.Header.Type != unix.NLMSG_ERROR || i >= uint32(len(why)) || len(m.Data) < 4 {
				continue
			}
			if err := replyError(m); err != nil && (!why[i].del || gone(err) != nil) {
				w.errs.add(err, why[i].format, why[i].args...)
			}
			if int(i) == len(why)-1 {
				return nil
			}
		}
	}
}

// replyError is the error an NLMSG_ERROR reply carries, nil for an ack,
// with the kernel's extended message when it gave one.
func replyError(m syscall.NetlinkMessage) error {
	code := int32(binary.NativeEndian.Uint32(m.Data))
	if code == 0 {
		return nil
	}
	err := error(unix.Errno(-code))
	if m.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(m.Data) < 4+unix.SizeofNlMsghdr {
		return err
	}
	attrs := m.Data[4+unix.SizeofNlMsghdr:] // NETLINK_CAP_ACK: the request's header alone
	for len(attrs) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(attrs))
		if l < unix.SizeofRtAttr || l > len(attrs) {
			break
		}
		if binary.NativeEndian.Uint16(attrs[2:]) == unix.NLMSGERR_ATTR_MSG {
			if msg := string(bytes.TrimRight(attrs[unix.SizeofRtAttr:l], "\x00")); msg != "" {
				return fmt.Errorf("%w (%s)", err, msg)
			}
		}
		attrs = attrs[min(len(attrs), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
	}
	return err
}
