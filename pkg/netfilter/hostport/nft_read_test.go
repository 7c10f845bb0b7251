package hostport

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestReadIsWholeUnderCommits reads a table of many rules while another
// socket rewrites its fixed chains 200 times a second, as concurrent ADDs
// do (the bench's concurrent portmap phase makes ~80 commits a second; more
// here, so that an unchecked read is caught within the run): each read that
// returns must see every rule, as many as the decoding read sees at rest. A
// rule dump spans several messages, and one that a commit interrupts can
// come back short or with duplicates.
func TestReadIsWholeUnderCommits(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "nftread")
	const pods = 60
	ns.Do(t, func() error {
		for i := range pods {
			c := &Conf{
				Attachment: Attachment{Network: "cbr0", ContainerID: fmt.Sprintf("pod%03d", i), IfName: "eth0"},
				Maps:       []PortMap{{HostPort: uint16(20000 + i), ContainerPort: 80, Protocol: "tcp"}},
				SNAT:       true, MarkBit: 13,
			}
			addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(1 + i)}), 16)
			if err := (NFTables{}).Add(context.Background(), c, []netip.Prefix{addr}); err != nil {
				return err
			}
		}
		return nil
	})
	var want int
	ns.Do(t, func() error {
		conn, err := nftconn.Dial()
		if err != nil {
			return err
		}
		defer conn.Close()
		st, err := readDecoded(conn, family.IPv4)
		if err != nil {
			return err
		}
		want = len(st.attRules())
		return nil
	})
	if want < pods {
		t.Fatalf("%d attachment rules for %d pods", want, pods)
	}

	var stop atomic.Bool
	churned := make(chan error, 1)
	go func() { churned <- netns.Do(ns.Path, func() error { return churn(&stop) }) }()
	defer func() {
		stop.Store(true)
		if err := <-churned; err != nil {
			t.Errorf("committing meanwhile: %v", err)
		}
	}()
	ns.Do(t, func() error {
		conn, err := nftconn.Dial()
		if err != nil {
			return err
		}
		defer conn.Close()
		good := 0
		for i := range 400 {
			st, err := read(conn, family.IPv4)
			if errors.Is(err, nftconn.ErrChanging) {
				continue // DEL and ADD start over; a short view is what must never be used
			}
			if err != nil {
				return err
			}
			if got := len(st.attRules()); got != want {
				return fmt.Errorf("read %d saw %d attachment rules, want %d", i, got, want)
			}
			good++
		}
		if good < 100 {
			return fmt.Errorf("only %d of 400 reads got a stable view", good)
		}
		return nil
	})
}

// churn rewrites the table's fixed chains (prerouting, output, the jump
// to the host ports), as every ADD does, every 5 ms until stop is set:
// rules before the attachments' in a dump's order are deleted and added.
func churn(stop *atomic.Bool) error {
	conn, err := nftconn.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	for !stop.Load() {
		ensureLayout(conn, family.IPv4)
		if err := conn.Flush(); err != nil {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}
