package overlay

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/cnisuite/cni/pkg/link"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// benchPeers makes count peers with subnets 10.128.0.0/24, 10.128.1.0/24, ...
// and public IPs in the underlay's 192.168.0.0/16.
func benchPeers(count int) []Peer {
	peers := make([]Peer, count)
	for i := range peers {
		peers[i] = Peer{
			Subnet:   netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 128+i/256, i%256)),
			PublicIP: netip.MustParseAddr(fmt.Sprintf("192.168.%d.%d", 1+i/250, 1+i%250)),
			VtepMAC:  MACFromID(fmt.Sprint(i)),
		}
	}
	return peers
}

// benchNode is a namespace with an underlay veth pair.
func benchNode(b *testing.B) (*netnstest.NS, DeviceConfig) {
	ns := newNS(b, "vx-bench")
	ns.Run(b, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	ns.Run(b, "ip", "link", "set", "eth0", "up")
	ns.Run(b, "ip", "addr", "add", "192.168.0.1/16", "dev", "eth0")
	return ns, DeviceConfig{Underlay: "eth0", Subnet: netip.MustParsePrefix("10.127.0.0/24"), MAC: MACFromID("bench"), Log: quiet}
}

// benchFromScratch times programming count peers on a new device: a node
// joining a cluster of count nodes, or restarting after a reboot. Each peer
// is 4 writes: FDB entry, neighbour, nexthop and route.
func benchFromScratch(b *testing.B, count int) {
	ns, cfg := benchNode(b)
	peers := benchPeers(count)
	for range b.N {
		b.StopTimer()
		var d *Device
		ns.Do(b, func() (err error) {
			if err = link.DeleteIfExists("flannel.1"); err == nil {
				d, err = EnsureDevice(cfg)
			}
			return err
		})
		b.StartTimer()
		ns.Do(b, func() error {
			s, err := d.Reconcile(peers)
			if err == nil && s.Added != 4*count {
				err = fmt.Errorf("reconcile made %d adds, want %d", s.Added, 4*count)
			}
			return err
		})
	}
}

func BenchmarkReconcile1000(b *testing.B) { benchFromScratch(b, 1000) }
func BenchmarkReconcile2000(b *testing.B) { benchFromScratch(b, 2000) }
func BenchmarkReconcile5000(b *testing.B) { benchFromScratch(b, 5000) }

// BenchmarkReconcileUnchanged2000 times the periodic reconcile of 2000 peers
// that did not change: dumps and a diff, no write.
func BenchmarkReconcileUnchanged2000(b *testing.B) {
	ns, cfg := benchNode(b)
	peers := benchPeers(2000)
	var d *Device
	ns.Do(b, func() (err error) {
		if d, err = EnsureDevice(cfg); err == nil {
			_, err = d.Reconcile(peers)
		}
		return err
	})
	b.ResetTimer()
	for range b.N {
		ns.Do(b, func() error {
			s, err := d.Reconcile(peers)
			if err == nil && s.Writes() != 0 {
				err = fmt.Errorf("unchanged peers made %d writes", s.Writes())
			}
			return err
		})
	}
}

// benchOneEvent times one lease event with n peers programmed: a new peer
// added (4 writes: FDB, neighbour, nexthop, route), then removed again (4
// writes), by fn.
func benchOneEvent(b *testing.B, n int, fn func(*Device, []Peer) (Stats, error)) {
	ns, cfg := benchNode(b)
	all := benchPeers(n + 1)
	peers, grown := all[:n], all
	var d *Device
	ns.Do(b, func() (err error) {
		if d, err = EnsureDevice(cfg); err == nil {
			_, err = d.Reconcile(peers)
		}
		return err
	})
	b.ResetTimer()
	ns.Do(b, func() error {
		for range b.N {
			for _, ps := range [][]Peer{grown, peers} {
				if s, err := fn(d, ps); err != nil || s.Writes() != 4 {
					return fmt.Errorf("event made %d writes (want 4): %v", s.Writes(), err)
				}
			}
		}
		return nil
	})
}

// BenchmarkEventUpdate is the lease event's path: diff against what was
// written last, no kernel read.
// Its in-memory diff still walks every peer.
func BenchmarkEventUpdate40(b *testing.B)   { benchOneEvent(b, 40, (*Device).Update) }
func BenchmarkEventUpdate2000(b *testing.B) { benchOneEvent(b, 2000, (*Device).Update) }

// BenchmarkEventReconcile40 is the same event diffed against kernel dumps.
func BenchmarkEventReconcile40(b *testing.B) { benchOneEvent(b, 40, (*Device).Reconcile) }
