package vxlan

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vishvananda/netlink"
)

// TestWriterReportsEachFailedEntry: batches of neighbour writes spanning
// several datagrams, a few of which fail, write every other entry and
// report exactly the failed ones by name, and count every failure when all
// fail; deleting entries already gone is no error.
func TestWriterReportsEachFailedEntry(t *testing.T) {
	ns := newNS(t, "vx-batch")
	ns.Run(t, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	ns.Run(t, "ip", "link", "set", "d0", "up")
	const count = 3*batchSize + 5
	bad := map[int]bool{0: true, batchSize - 1: true, batchSize: true, 2*batchSize + 7: true, count - 1: true}
	ns.Do(t, func() error {
		k, err := openKernel(false)
		if err != nil {
			return err
		}
		defer k.close()
		l, err := k.h.LinkByName("d0")
		if err != nil {
			return err
		}
		write := func(typ uint16, del bool, skip func(int) bool) error {
			for i := range count {
				if skip(i) {
					continue
				}
				dev := l.Attrs().Index
				if bad[i] && !del {
					dev = 1 << 30 // no such device
				}
				ip := netip.AddrFrom4([4]byte{10, 9, byte(i / 256), byte(i % 256)})
				k.w.add(entry{format: "neighbour %s", args: []any{ip}, del: del}, typ, unix.NLM_F_CREATE, ndmsg(unix.AF_INET, dev, 0),
					neighAttrs(ip, [6]byte{2, 0, 0, 0, byte(i / 256), byte(i % 256)})...)
			}
			return k.w.flush()
		}

		err = write(unix.RTM_NEWNEIGH, false, func(int) bool { return false })
		if err == nil {
			return fmt.Errorf("writes to a missing device reported no error")
		}
		for i := range count {
			ip := fmt.Sprintf("neighbour 10.9.%d.%d:", i/256, i%256)
			if strings.Contains(err.Error(), ip) != bad[i] {
				t.Errorf("entry %d failed: %v, error says so: %v\n%v", i, bad[i], !bad[i], err)
			}
		}
		if !strings.Contains(err.Error(), unix.ENODEV.Error()) {
			t.Errorf("the errors do not carry the kernel's: %v", err)
		}
		neighs, err := k.h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(neighs) != count-len(bad) {
			t.Errorf("%d neighbours written, want %d", len(neighs), count-len(bad))
		}

		// Every write fails: each failure is still counted, none of the
		// replies is lost.
		for i := range count {
			bad[i] = true
		}
		err = write(unix.RTM_NEWNEIGH, false, func(int) bool { return false })
		if want := fmt.Sprintf("and %d more failed writes", count-maxErrors); err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("all writes failing gave %v, want it to end with %q", err, want)
		}
		clear(bad)

		// Delete every other one, then all: half are gone by then.
		if err := write(unix.RTM_DELNEIGH, true, func(i int) bool { return i%2 == 0 }); err != nil {
			return err
		}
		if err := write(unix.RTM_DELNEIGH, true, func(int) bool { return false }); err != nil {
			return err
		}
		if neighs, err = k.h.NeighList(l.Attrs().Index, netlink.FAMILY_V4); err == nil && len(neighs) != 0 {
			t.Errorf("%d neighbours left after deleting all", len(neighs))
		}
		return err
	})
}
