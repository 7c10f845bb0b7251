package stale

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/netns"
)

// nsIdent is a namespace's identity: its device and inode, which the kernel
// reuses once the namespace is freed, and its ID where the kernel has one,
// which it never reuses within a boot.
type nsIdent struct{ dev, ino, id uint64 }

// same reports whether a and b may be one namespace: a differing device,
// inode or (when both are known) ID proves them two.
func (a nsIdent) same(b nsIdent) bool {
	return a.dev == b.dev && a.ino == b.ino && (a.id == 0 || b.id == 0 || a.id == b.id)
}

// ioctls of nsfs files: NS_GET_NSTYPE is _IO(0xb7, 3); NS_GET_ID is
// _IOR(0xb7, 13, __u64), the namespace's ID (Linux 6.18+).
const (
	nsGetNstype = 0xb7<<8 | 3
	nsGetID     = 2<<30 | 8<<16 | 0xb7<<8 | 13
)

// openNamespace opens path without blocking on a FIFO or a device an
// attacker put there.
func openNamespace(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
}

// identifyFile returns the identity of the network namespace f is, false
// when f is no network namespace.
func identifyFile(f *os.File) (nsIdent, bool) {
	fd := int(f.Fd())
	var sfs unix.Statfs_t
	var st unix.Stat_t
	if unix.Fstatfs(fd, &sfs) != nil || sfs.Type != unix.NSFS_MAGIC || unix.Fstat(fd, &st) != nil {
		return nsIdent{}, false
	}
	if typ, err := unix.IoctlRetInt(fd, nsGetNstype); err != nil || typ != unix.CLONE_NEWNET {
		return nsIdent{}, false
	}
	id, _ := fileNamespaceID(f) // zero on kernels before 6.18
	return nsIdent{st.Dev, st.Ino, id}, true
}

func fileNamespaceID(f *os.File) (uint64, error) {
	var id uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nsGetID, uintptr(unsafe.Pointer(&id))); errno != 0 {
		return 0, errno
	}
	return id, nil
}

// namespaceID reads the ID of the namespace at path.
func namespaceID(path string) (uint64, error) {
	f, err := openNamespace(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return fileNamespaceID(f)
}

// threadNamespace identifies the calling thread's network namespace; the
// caller holds its thread.
func threadNamespace() (nsIdent, error) {
	f, err := netns.Here()
	if err != nil {
		return nsIdent{}, err
	}
	defer f.Close()
	id, ok := identifyFile(f)
	if !ok {
		return nsIdent{}, fmt.Errorf("%s is not a network namespace", f.Name())
	}
	return id, nil
}

// assignNSID returns f's nsid in the calling thread's namespace (asking the
// kernel for one when it has none) and that namespace's inode and ID.
func assignNSID(f *os.File) (nsid int32, nodeIno, nodeID uint64, err error) {
	runtime.LockOSThread() // the node's namespace must be the one the socket is made in
	defer runtime.UnlockOSThread()
	node, err := threadNamespace()
	if err != nil {
		return 0, 0, 0, err
	}
	socks, closeSocket, err := routeSocket()
	if err != nil {
		return 0, 0, 0, err
	}
	defer closeSocket()
	fdAttr := nl.NewRtAttr(unix.NETNSA_FD, nl.Uint32Attr(uint32(f.Fd())))
	nsid, err = nsidRequest(socks, fdAttr)
	if err == nil && nsid == unix.NETNSA_NSID_NOT_ASSIGNED {
		// Another process may assign one between the two requests: EEXIST.
		err = nsidSet(socks, fdAttr)
		if err == nil || errors.Is(err, unix.EEXIST) {
			nsid, err = nsidRequest(socks, fdAttr)
		}
	}
	if err == nil && nsid < 0 {
		err = errors.New("the kernel assigned no nsid")
	}
	if err != nil {
		return 0, 0, 0, err
	}
	return nsid, node.ino, node.id, nil
}

// routeSocket opens a route socket in the calling thread's namespace for
// several requests (a socket per request costs four system calls more), as
// the sockets of a request; the function closes it.
func routeSocket() (map[int]*nl.SocketHandle, func(), error) {
	s, err := nl.GetNetlinkSocketAt(vnetns.None(), vnetns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("opening a route socket: %w", err)
	}
	h := &nl.SocketHandle{Socket: s}
	return map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: h}, h.Close, nil
}

// nsidSet asks the kernel to assign the namespace of fdAttr the lowest free
// nsid, on socks (nil: a socket of its own).
func nsidSet(socks map[int]*nl.SocketHandle, fdAttr *nl.RtAttr) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWNSID, unix.NLM_F_ACK)
	req.Sockets = socks
	req.AddData(nl.NewRtGenMsg())
	req.AddData(fdAttr)
	req.AddData(nl.NewRtAttr(unix.NETNSA_NSID, nl.Uint32Attr(uint32(0xffffffff)))) // -1: any
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// nsidRequest sends RTM_GETNSID with attr on socks (nil: a socket of its
// own) and returns the nsid answered.
// Asked by nsid, the kernel answers ENOENT once that nsid's namespace is
// freed or being freed (nothing holds it any more).
func nsidRequest(socks map[int]*nl.SocketHandle, attr *nl.RtAttr) (int32, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNSID, 0)
	req.Sockets = socks
	hdr := nl.NewRtGenMsg()
	req.AddData(hdr)
	req.AddData(attr)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNSID)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if len(m) < hdr.Len() {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[hdr.Len():])
		if err != nil {
			return 0, err
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.NETNSA_NSID && len(a.Value) == 4 {
				return int32(binary.NativeEndian.Uint32(a.Value)), nil
			}
		}
	}
	return 0, errors.New("the kernel's answer holds no nsid")
}

// nsidTaken reports whether nsid names a live namespace in the calling
// thread's namespace.
func nsidTaken(nsid int32) (bool, error) {
	_, err := nsidRequest(nil, nl.NewRtAttr(unix.NETNSA_NSID, nl.Uint32Attr(uint32(nsid))))
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("asking the kernel for nsid %d: %w", nsid, err)
	}
	return true, nil
}

// freed reports whether n's namespace was freed, and why it is known; the
// nsid was recorded in the node's namespace, where this must run.
func (p *Prober) freed(n ipam.Netns) (bool, string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	node, err := threadNamespace()
	if err != nil {
		return false, "", err
	}
	if node.ino != n.NodeIno || (n.NodeID != 0 && node.id != 0 && node.id != n.NodeID) {
		return false, fmt.Sprintf("its nsid was recorded in namespace net:[%d] and this runs in net:[%d], which cannot see it", n.NodeIno, node.ino), nil
	}
	taken, err := nsidTaken(n.NSID)
	if err != nil {
		return false, "", err
	}
	if !taken {
		return true, fmt.Sprintf("its nsid %d is free: the kernel freed net:[%d]", n.NSID, n.Ino), nil
	}
	h, found, err := p.nsidOwner(n.NSID)
	switch {
	case err != nil:
		return false, "", err
	case !found:
		return false, fmt.Sprintf("its nsid %d is still taken, by net:[%d] held out of sight (a mount in another mount namespace, a socket) or by a newer namespace: find it with `lsns -t net`", n.NSID, n.Ino), nil
	case h.ns.same(nsIdent{n.Dev, n.Ino, n.ID}):
		return false, fmt.Sprintf("net:[%d] still exists: %s is in it", n.Ino, h.what), nil
	}
	return true, fmt.Sprintf("its nsid %d now names another namespace, net:[%d] of %s, so the kernel freed ours", n.NSID, h.ns.ino, h.what), nil
}

// holder is a namespace found on the node, and what shows it (for messages).
type holder struct {
	ns   nsIdent
	what string
}

// nsidOwner returns the namespace the node now knows as nsid, among those
// that a mount of ours or a process's namespace shows; the look is taken
// once per Prober, from the calling thread's namespace.
func (p *Prober) nsidOwner(nsid int32) (holder, bool, error) {
	if p.owners == nil && p.err == nil {
		p.owners, p.err = visibleNSIDs("/proc")
	}
	h, ok := p.owners[nsid]
	return h, ok, p.err
}

// place is somewhere a namespace may be opened: a path, and what it is.
type place struct{ path, what string }

// visibleNSIDs maps the nsids of the namespaces mounted in our mount
// namespace, or entered by a process, to those namespaces. Namespaces that
// cannot be opened (a process that ended meanwhile, one even root may not
// inspect) are left out: a missing one only keeps a reservation.
func visibleNSIDs(proc string) (map[int32]holder, error) {
	places, err := nsfsMounts(filepath.Join(proc, "self", "mountinfo"))
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", proc, err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			places = append(places, place{filepath.Join(proc, e.Name(), "ns", "net"), "process " + e.Name()})
		}
	}
	out := map[int32]holder{}
	seen := map[[2]uint64]bool{}
	for _, pl := range places {
		var st unix.Stat_t
		if unix.Stat(pl.path, &st) != nil || seen[[2]uint64{st.Dev, st.Ino}] {
			continue
		}
		seen[[2]uint64{st.Dev, st.Ino}] = true
		if h, nsid, ok := nsidAt(pl); ok {
			out[nsid] = h
		}
	}
	return out, nil
}

// nsidAt returns the namespace at pl and its nsid in the calling thread's
// namespace, false when it is none or has none.
func nsidAt(pl place) (holder, int32, bool) {
	f, err := openNamespace(pl.path)
	if err != nil {
		return holder{}, 0, false
	}
	defer f.Close()
	id, ok := identifyFile(f)
	if !ok {
		return holder{}, 0, false
	}
	nsid, err := nsidRequest(nil, nl.NewRtAttr(unix.NETNSA_FD, nl.Uint32Attr(uint32(f.Fd()))))
	if err != nil || nsid < 0 {
		return holder{}, 0, false
	}
	return holder{id, pl.what}, nsid, true
}

// nsfsMounts lists the network namespaces mounted in our mount namespace.
func nsfsMounts(path string) ([]place, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the mounts: %w", err)
	}
	defer f.Close()
	var out []place
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if where, ok := parseNsfsMount(sc.Text()); ok {
			out = append(out, place{where, "the mount at " + where})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return out, nil
}

// parseNsfsMount reads one line of mountinfo ("36 25 0:4 net:[4026532281]
// /run/netns/x rw shared:5 - nsfs nsfs rw") and returns the mount point when
// it mounts a network namespace.
func parseNsfsMount(line string) (string, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	f, g := strings.Fields(pre), strings.Fields(post)
	if !ok || len(f) < 5 || len(g) < 1 || g[0] != "nsfs" || !strings.HasPrefix(f[3], "net:[") {
		return "", false
	}
	return unescapeMount(f[4]), true
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
