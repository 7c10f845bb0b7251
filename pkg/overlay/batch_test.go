package overlay

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
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
		k, err := openKernel(family.IPv4)
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
				k.w.add(entry{format: "neighbour %s", args: []any{ip}, del: del}, typ, unix.NLM_F_CREATE, ndmsg(k.family, dev, 0),
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
		neighs, err := k.h.NeighList(l.Attrs().Index, k.family)
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
		if neighs, err = k.h.NeighList(l.Attrs().Index, k.family); err == nil && len(neighs) != 0 {
			t.Errorf("%d neighbours left after deleting all", len(neighs))
		}
		return err
	})
}

// TestWriterEchoesNexthopIDs: nexthops created in batches spanning several
// datagrams, a few of which fail, each get the id the kernel chose, read
// from its echo; the failed ones get none and are reported by name.
func TestWriterEchoesNexthopIDs(t *testing.T) {
	ns := newNS(t, "vx-batch")
	ns.Run(t, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	ns.Run(t, "ip", "link", "set", "d0", "up")
	ns.Run(t, "ip", "link", "set", "d1", "up") // a nexthop needs its device's carrier
	const count = 2*batchSize + 5
	bad := map[int]bool{0: true, batchSize - 1: true, batchSize + 3: true, count - 1: true}
	gw := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 9, byte(i / 256), byte(i % 256)}) }
	ids := make([]uint32, count)
	ns.Do(t, func() error {
		k, err := openKernel(family.IPv4)
		if err != nil {
			return err
		}
		defer k.close()
		l, err := k.h.LinkByName("d0")
		if err != nil {
			return err
		}
		for i := range count {
			dev := l.Attrs().Index
			if bad[i] {
				dev = 1 << 30 // no such device
			}
			k.w.add(entry{format: "nexthop via %s", args: []any{gw(i)}, id: &ids[i]},
				unix.RTM_NEWNEXTHOP, unix.NLM_F_CREATE|unix.NLM_F_ECHO, nhmsg(k.family), nexthopAttrs(gw(i), dev)...)
		}
		err = k.w.flush()
		for i := range count {
			if strings.Contains(fmt.Sprint(err), "nexthop via "+gw(i).String()+":") != bad[i] {
				t.Errorf("nexthop %d failed: %v, the error says so: %v\n%v", i, bad[i], !bad[i], err)
			}
		}
		return nil
	})
	shown := map[string]string{} // ip nexthop's lines by id
	for _, line := range strings.Split(ns.Run(t, "ip", "nexthop", "show"), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			shown[f[1]] = line
		}
	}
	seen := map[uint32]bool{}
	for i, id := range ids {
		switch {
		case bad[i] && id != 0:
			t.Errorf("failed nexthop %d got id %d", i, id)
		case bad[i]:
		case id == 0 || seen[id]:
			t.Errorf("nexthop %d got id %d (given before: %v)", i, id, seen[id])
		default:
			seen[id] = true
			has(t, "nexthop", shown[fmt.Sprint(id)], "via "+gw(i).String()+" dev d0 scope link proto 83 onlink")
		}
	}
}
