package nftconn

import (
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestDialNFTHandsReleaseToTheRing checks that after a transaction that
// deleted something, the ring and not the closed descriptor holds the
// last reference to the socket, and that releasing the ring frees the
// socket: nothing outlives the connection.
func TestDialNFTHandsReleaseToTheRing(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	if !ioUringAvailable() {
		t.Skip("io_uring is unavailable here: sockets are released by close")
	}
	ns := netnstest.New(t, "nfrel")
	var conn *Conn
	ns.Do(t, func() error {
		var err error
		if conn, err = Dial(); err != nil {
			return err
		}
		table := conn.AddTable(&nftables.Table{Name: "nfrel", Family: nftables.TableFamilyIPv4})
		if err := conn.Flush(); err != nil {
			return err
		}
		conn.DelTable(table)
		return conn.Flush()
	})
	h := &conn.ring
	defer h.release()
	_ = conn.CloseLasting() // the descriptor, not yet the ring
	if len(h.rings) != 1 {
		t.Fatalf("the connection's socket is in %d rings, want 1", len(h.rings))
	}
	if n := userNetfilterSockets(t, ns); n != 1 {
		t.Fatalf("with its descriptor closed, %d netfilter sockets left in the namespace, want the ring's 1", n)
	}
	h.release()
	deadline := time.Now().Add(10 * time.Second)
	for userNetfilterSockets(t, ns) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the socket outlived its ring by 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ioUringAvailable() bool {
	var params [120]byte
	r, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	if errno != 0 {
		return false
	}
	unix.Close(int(r))
	return true
}

// userNetfilterSockets counts the namespace's netfilter netlink sockets
// other than the kernel's own (port ID 0).
func userNetfilterSockets(t *testing.T, ns *netnstest.NS) int {
	n := 0
	for _, line := range strings.Split(ns.Run(t, "cat", "/proc/net/netlink"), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == "12" && f[2] != "0" { // NETLINK_NETFILTER
			n++
		}
	}
	return n
}

// TestRuleCommentMalformed: user data another program wrote badly reads as
// no comment, never a panic.
func TestRuleCommentMalformed(t *testing.T) {
	good := Comment("dnat name: n id: c ifname: eth0")
	for _, ud := range [][]byte{{0}, {0, 9, 'x'}, {1, 200}, append(append([]byte{}, good...), 0, 5)} {
		if c := RuleComment(&nftables.Rule{UserData: ud}); c != "" {
			t.Errorf("user data %v read as comment %q", ud, c)
		}
	}
	if c := RuleComment(&nftables.Rule{UserData: good}); c != "dnat name: n id: c ifname: eth0" {
		t.Errorf("a well-formed comment read as %q", c)
	}
}
