// Package nftconn is what every nftables backend of the suite needs: the
// netlink connection (Dial), whole reads under concurrent commits (Stable),
// the read-plan-commit loop (Transact), the expressions the backends share
// (address, interface and mark matches, comments), and the editing of
// iptables-nft's tables over netlink for the iptables backends' quick DELs
// (XTDelete).
// It owns no table. It imports nothing else under pkg/netfilter, and
// nothing under pkg/netfilter imports a plugin, the daemon, pkg/subnet or
// pkg/overlay.
package nftconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/netconf"
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

// Conn is a lasting nftables connection whose release does not wait.
type Conn struct {
	*nftables.Conn
	raw  *netlink.Conn // the same socket, for what the library cannot ask
	ring holder
}

// Dial opens a Conn; Close releases it. Its error says what failed.
func Dial() (*Conn, error) {
	c := &Conn{}
	conn, err := nftables.New(nftables.AsLasting(), nftables.WithSockOptions(func(nc *netlink.Conn) error {
		c.raw = nc
		if err := raiseBuffers(nc); err != nil {
			return err
		}
		return c.ring.hold(nc)
	}))
	if err != nil {
		c.ring.release()
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	c.Conn = conn
	return c, nil
}

// socketBuffer bounds one transaction, which the library sends as a single
// datagram and whose acknowledgements (one per rule) it reads only once it
// is sent: the defaults (net.core.wmem_default and rmem_default, 212992
// bytes) are passed at about a thousand mappings of one pod, and sendmsg
// fails with EMSGSIZE, or recvmsg with ENOBUFS. It is a cap, not an
// allocation.
const socketBuffer = 64 << 20

// raiseBuffers raises the socket's buffers to socketBuffer, above
// net.core.wmem_max and rmem_max, which the FORCE options may do with
// CAP_NET_ADMIN (which changing nftables needs anyway).
func raiseBuffers(nc *netlink.Conn) error {
	raw, err := nc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, socketBuffer)
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("raising the nftables socket's buffers: %w", serr)
	}
	return nil
}

// Close closes the socket, then the ring that holds it.
func (c *Conn) Close() {
	_ = c.CloseLasting()
	c.ring.release()
}

// DelRules queues the deletion of rules, each by its handle: a rule
// deleted or replaced since it was read fails the whole transaction.
func (c *Conn) DelRules(rules []*nftables.Rule) error {
	for _, r := range rules {
		if err := c.DelRule(r); err != nil {
			return err
		}
	}
	return nil
}

// RawRule is a rule as a dump lists it, its expressions left encoded.
type RawRule struct {
	Chain    string
	Handle   uint64
	Exprs    []byte // NFTA_RULE_EXPRESSIONS
	UserData []byte // where iptables-nft and nft keep a rule's comment
}

// Rule is r as a rule of table to delete by its handle.
func (r RawRule) Rule(table *nftables.Table) *nftables.Rule {
	return &nftables.Rule{Table: table, Chain: &nftables.Chain{Name: r.Chain, Table: table}, Handle: r.Handle, UserData: r.UserData}
}

// DumpRules lists the rules of table, or of one of its chains, without
// decoding their expressions (the library's decoding costs ~15 µs a rule).
// Neither library reports a dump that a concurrent commit interrupted
// (NLM_F_DUMP_INTR, which can sit on the end message they strip): a reader
// that needs a whole view reads within Stable.
func (c *Conn) DumpRules(table *nftables.Table, chain string) ([]RawRule, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_RULE_TABLE, table.Name)
	if chain != "" {
		ae.String(unix.NFTA_RULE_CHAIN, chain)
	}
	msgs, err := c.dump(unix.NFT_MSG_GETRULE, table.Family, ae)
	if err != nil {
		return nil, err
	}
	rules := make([]RawRule, 0, len(msgs))
	seen := make(map[uint64]bool, len(msgs))
	for _, m := range msgs {
		var r RawRule
		err := eachAttr(m, func(ad *netlink.AttributeDecoder) {
			switch ad.Type() {
			case unix.NFTA_RULE_CHAIN:
				r.Chain = ad.String()
			case unix.NFTA_RULE_HANDLE:
				r.Handle = ad.Uint64()
			case unix.NFTA_RULE_EXPRESSIONS:
				r.Exprs = ad.Bytes()
			case unix.NFTA_RULE_USERDATA:
				r.UserData = ad.Bytes()
			}
		})
		if err != nil {
			return nil, err
		}
		if r.Handle == 0 {
			return nil, errors.New("nftables rule without a handle")
		}
		if seen[r.Handle] {
			return nil, errShifted
		}
		seen[r.Handle] = true
		rules = append(rules, r)
	}
	return rules, nil
}

// DumpChains lists the names of table's chains, as DumpRules does rules.
func (c *Conn) DumpChains(table *nftables.Table) ([]string, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_CHAIN_TABLE, table.Name)
	msgs, err := c.dump(unix.NFT_MSG_GETCHAIN, table.Family, ae)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range msgs {
		var tbl, name string
		err := eachAttr(m, func(ad *netlink.AttributeDecoder) {
			switch ad.Type() {
			case unix.NFTA_CHAIN_TABLE:
				tbl = ad.String()
			case unix.NFTA_CHAIN_NAME:
				name = ad.String()
			}
		})
		if err != nil {
			return nil, err
		}
		if tbl == table.Name { // a kernel may ignore the filter
			names = append(names, name)
		}
	}
	return names, nil
}

// generation reads the namespace's ruleset generation, which every commit
// increments.
func (c *Conn) generation() (uint32, error) {
	msgs, err := c.raw.Execute(netlink.Message{
		Header: netlink.Header{Type: nftMsg(unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("reading the nftables generation: %w", err)
	}
	gen, found := uint32(0), false
	for _, m := range msgs {
		err := eachAttr(m, func(ad *netlink.AttributeDecoder) {
			if ad.Type() == unix.NFTA_GEN_ID {
				gen, found = ad.Uint32(), true
			}
		})
		if err != nil {
			return 0, err
		}
	}
	if !found {
		return 0, errors.New("the kernel's nftables generation reply has no ID")
	}
	return gen, nil
}

// stableReads bounds the reads of a ruleset that commits keep changing.
const stableReads = 8

// errShifted is a dump that listed a rule twice: a dump resumes by
// position, and another socket's transaction, uncommitted and so not seen
// in the generation, linked rules ahead of the position meanwhile.
var errShifted = errors.New("an nftables rule dump shifted under a concurrent transaction")

// ErrChanging is a read that concurrent commits kept interrupting (code 11).
var ErrChanging = netconf.Errorf(netconf.CodeTryAgainLater, "the nftables ruleset changed during each of %d reads; retry", stableReads)

// Stable runs read between two equal ruleset generations, so that the
// dumps it takes are whole and agree with each other: a dump that a
// concurrent commit interrupts can come back short or with duplicates. A
// read that a commit overlapped, or whose rule dump repeated a rule (see
// errShifted), runs again after a pause, until stableReads have; then
// Stable returns ErrChanging. Reads should leave expressions encoded:
// decoding keeps the window open (7-11 ms for 240 rules).
//
// What remains is a window of microseconds: a commit bumps the generation
// before it unlinks the rules it deletes, so a read that starts in between
// can miss a rule that the unlinking moved across a dump's resume point.
func (c *Conn) Stable(read func() error) error {
	for attempt := range stableReads {
		if attempt > 0 {
			Backoff(attempt - 1)
		}
		before, err := c.generation()
		if err != nil {
			return err
		}
		if err := read(); errors.Is(err, errShifted) {
			continue
		} else if err != nil {
			return err
		}
		after, err := c.generation()
		if err != nil {
			return err
		}
		if after == before {
			return nil
		}
	}
	return ErrChanging
}

func nftMsg(t uint16) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | t)
}

func (c *Conn) dump(msgType uint16, family nftables.TableFamily, ae *netlink.AttributeEncoder) ([]netlink.Message, error) {
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return c.raw.Execute(netlink.Message{
		Header: netlink.Header{Type: nftMsg(msgType), Flags: netlink.Request | netlink.Dump},
		Data:   append([]byte{byte(family), unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
}

// eachAttr calls fn for each attribute of an nftables message, after its
// nfgenmsg header.
func eachAttr(m netlink.Message, fn func(*netlink.AttributeDecoder)) error {
	if len(m.Data) < 4 {
		return errors.New("short nftables message")
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		fn(ad)
	}
	return ad.Err()
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
