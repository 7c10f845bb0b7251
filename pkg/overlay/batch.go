package overlay

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink"
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
	// id, when set, receives the id of the nexthop object the write
	// created, from the kernel's echo of it (NLM_F_ECHO).
	id *uint32
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
	w.at = append(w.at, len(w.buf))
	w.buf = appendMessage(w.buf, typ, flags, body, attrs)
	w.why = append(w.why, why)
	if len(w.at) == batchSize {
		w.send()
	}
}

// appendMessage appends one netlink message to b; its sequence number is
// left 0 for the sender to set.
func appendMessage(b []byte, typ, flags uint16, body []byte, attrs []attr) []byte {
	start := len(b)
	b = binary.NativeEndian.AppendUint32(b, 0) // length, set below
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags|unix.NLM_F_REQUEST)
	b = binary.NativeEndian.AppendUint32(b, 0) // sequence
	b = binary.NativeEndian.AppendUint32(b, 0) // port: the kernel's
	b = pad(append(b, body...))
	for _, a := range attrs {
		b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(a.value)))
		b = binary.NativeEndian.AppendUint16(b, a.typ)
		b = pad(append(b, a.value...))
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
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
			if i >= uint32(len(why)) {
				continue
			}
			if m.Header.Type == unix.RTM_NEWNEXTHOP && why[i].id != nil {
				*why[i].id = echoedID(m.Data)
			}
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
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
	var msg string
	// NETLINK_CAP_ACK: the request's header alone precedes the attributes.
	eachAttr(m.Data[4+unix.SizeofNlMsghdr:], func(typ uint16, v []byte) {
		if typ == unix.NLMSGERR_ATTR_MSG {
			msg = string(bytes.TrimRight(v, "\x00"))
		}
	})
	if msg != "" {
		return fmt.Errorf("%w (%s)", err, msg)
	}
	return err
}

// eachAttr calls fn with the type (nested and byte-order flags cleared) and
// value of each attribute in b, stopping at the first malformed one.
func eachAttr(b []byte, fn func(typ uint16, value []byte)) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[unix.SizeofRtAttr:l])
		b = b[min(len(b), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
	}
}

// echoedID is the NHA_ID of a nexthop message (struct nhmsg, attributes).
func echoedID(data []byte) uint32 {
	var id uint32
	if len(data) >= sizeofNhmsg {
		eachAttr(data[sizeofNhmsg:], func(typ uint16, v []byte) {
			if typ == unix.NHA_ID && len(v) == 4 {
				id = binary.NativeEndian.Uint32(v)
			}
		})
	}
	return id
}

// dump sends a dump request (typ, with the fixed part body) and calls fn
// with the payload of each message of type want in the answer. The batch
// must have been flushed. A dump the kernel marks as interrupted (its table
// changed meanwhile) is read whole and gives netlink.ErrDumpInterrupted,
// for link.RetryDump to repeat it.
func (w *writer) dump(typ uint16, body []byte, want uint16, fn func(data []byte)) error {
	w.seq++
	req := appendMessage(nil, typ, unix.NLM_F_DUMP, body, nil)
	binary.NativeEndian.PutUint32(req[8:], w.seq)
	if err := unix.Sendto(w.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	interrupted := false
	for {
		n, _, err := unix.Recvfrom(w.fd, w.in, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(w.in[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != w.seq {
				continue // a reply to an earlier batch, left by a failed read
			}
			interrupted = interrupted || m.Header.Flags&unix.NLM_F_DUMP_INTR != 0
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if len(m.Data) >= 4 && int32(binary.NativeEndian.Uint32(m.Data)) < 0 {
					return unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data)))
				}
				if interrupted {
					return netlink.ErrDumpInterrupted
				}
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return unix.EINVAL
				}
				return replyError(m)
			case want:
				fn(m.Data)
			}
		}
	}
}
