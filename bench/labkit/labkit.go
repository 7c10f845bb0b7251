// Package labkit holds what the bench's lease daemon labs share, in etcd
// mode (package main) and on the Kubernetes API (bench/kubelab): the peers
// the bench makes up, the timing of their overlay entries in a node from
// netlink notifications, and a daemon's memory.
package labkit

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Peer is a node the bench makes up: a subnet outside the daemon's own
// range, a public address and a VTEP MAC of its own. Its public address
// need not exist: only the programming is measured.
type Peer struct {
	Subnet netip.Prefix
	MAC    net.HardwareAddr
	Public string
}

// PeerN is the i-th peer (i < 65536): 10.(1+i/256).(i%256).0/24.
func PeerN(i int) Peer {
	return Peer{
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i % 256), 0}), 24),
		MAC:    net.HardwareAddr{0x0a, 0xbe, 0, 0, byte(i >> 8), byte(i)},
		Public: fmt.Sprintf("172.31.%d.%d", i/250, 1+i%250),
	}
}

// BackendData is the peer's vxlan backend data as flanneld writes it.
func (p Peer) BackendData() string {
	return fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, p.MAC.String())
}

// keys are the peer's route, neighbour and FDB entries as Tracker names them.
func (p Peer) keys() [3]string {
	return [3]string{"r" + p.Subnet.String(), "n" + p.Subnet.Addr().String(), "f" + p.MAC.String()}
}

// Tracker records when each route, neighbour and FDB entry first appeared
// in a node, and counts every notification.
type Tracker struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	count int
	done  chan struct{}
	fresh chan struct{} // a new key was seen; the bench waits on it, never polls
}

// Track subscribes to the route and neighbour (FDB included) notifications
// of the namespace at nsPath; Stop ends it.
func Track(nsPath string) (*Tracker, error) {
	h, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	t := &Tracker{seen: map[string]time.Time{}, done: make(chan struct{}), fresh: make(chan struct{}, 1)}
	routes, neighs := make(chan netlink.RouteUpdate, 16384), make(chan netlink.NeighUpdate, 16384)
	if err := netlink.RouteSubscribeWithOptions(routes, t.done, netlink.RouteSubscribeOptions{Namespace: &h, ReceiveBufferSize: 8 << 20}); err != nil {
		return nil, err
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, t.done, netlink.NeighSubscribeOptions{Namespace: &h, ReceiveBufferSize: 8 << 20}); err != nil {
		close(t.done)
		return nil, err
	}
	go t.follow(routes, neighs)
	return t, nil
}

func (t *Tracker) follow(routes <-chan netlink.RouteUpdate, neighs <-chan netlink.NeighUpdate) {
	for {
		select {
		case u, ok := <-routes:
			if !ok {
				return
			}
			key := ""
			if u.Type == unix.RTM_NEWROUTE && u.Dst != nil {
				key = "r" + u.Dst.String()
			}
			t.note(key)
		case u, ok := <-neighs:
			if !ok {
				return
			}
			key := ""
			switch {
			case u.Type != unix.RTM_NEWNEIGH:
			case u.Family == unix.AF_BRIDGE:
				key = "f" + u.HardwareAddr.String()
			case u.IP != nil:
				key = "n" + u.IP.String()
			}
			t.note(key)
		}
	}
}

func (t *Tracker) note(key string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.count++
	if _, ok := t.seen[key]; key != "" && !ok {
		t.seen[key] = now
		select {
		case t.fresh <- struct{}{}:
		default:
		}
	}
}

// Stop ends the subscriptions.
func (t *Tracker) Stop() { close(t.done) }

// Notifications is how many route and neighbour notifications came so far.
func (t *Tracker) Notifications() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count
}

// Programmed returns when the last of the peers' three entries appeared,
// once all of them have, or false at the deadline.
// The times are those of the notifications' arrival, so waking up late here
// adds nothing to them.
func (t *Tracker) Programmed(peers []Peer, deadline time.Time) (time.Time, bool) {
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	for {
		if last, ok := t.all(peers); ok {
			return last, true
		}
		select {
		case <-t.fresh:
		case <-timeout.C:
			return t.all(peers)
		}
	}
}

func (t *Tracker) all(peers []Peer) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var last time.Time
	for _, p := range peers {
		for _, k := range p.keys() {
			at, ok := t.seen[k]
			if !ok {
				return time.Time{}, false
			}
			if at.After(last) {
				last = at
			}
		}
	}
	return last, true
}

// ProcStatus reads a field of /proc/PID/status in KiB (VmRSS, VmHWM); NaN
// when the process or the field is gone.
func ProcStatus(pid int, field string) float64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return math.NaN()
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kib, _ := strconv.ParseFloat(f[0], 64)
				return kib
			}
		}
	}
	return math.NaN()
}

// Sightings records when a bystander first saw each key (a lease, a Node):
// the moment any client could first know of it.
type Sightings struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	fresh chan struct{}
}

func NewSightings() *Sightings {
	return &Sightings{seen: map[string]time.Time{}, fresh: make(chan struct{}, 1)}
}

// Saw records keys as seen at now, unless they were seen before.
func (s *Sightings) Saw(now time.Time, keys ...string) {
	s.mu.Lock()
	for _, k := range keys {
		if _, ok := s.seen[k]; !ok {
			s.seen[k] = now
		}
	}
	s.mu.Unlock()
	select {
	case s.fresh <- struct{}{}:
	default:
	}
}

// At waits for key to be seen and returns when it was; false at the
// deadline or when ctx ends.
func (s *Sightings) At(ctx context.Context, key string, deadline time.Time) (time.Time, bool) {
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	for {
		s.mu.Lock()
		at, ok := s.seen[key]
		s.mu.Unlock()
		if ok {
			return at, true
		}
		select {
		case <-s.fresh:
		case <-timeout.C:
			return time.Time{}, false
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
}
