package subnetd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/netns"
	"github.com/cnisuite/cni/pkg/overlay"
)

// Repairs are signalled at most this often: a device that Ensure cannot get
// right (each attempt a change, hence an event) must not spin the daemon.
const repairGap = 100 * time.Millisecond

// Changes follows the link, address, route and neighbour notifications of
// the namespace the calling thread is in (the node's) and signals when one
// concerns a device of ours (deleted, set down, or its MTU, MAC, address or
// vxlan settings changed) or deletes one of our entries (a route of
// overlay.RouteProtocol, a neighbour or FDB entry on our device):
// lease events are programmed against what was last written, so only this
// shows them that the kernel changed under them. Our own writes signal too;
// the repair they cause writes nothing. A subscription that fails (e.g. the
// socket overran) signals once, since events may have been lost, and is made
// again.
func (p plane) Changes(ctx context.Context) (<-chan struct{}, error) {
	out := make(chan struct{}, 1)
	names := p.Devices()
	if len(names) == 0 {
		return out, nil // host-gw: no device, no signal
	}
	ns, err := netns.Here()
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle() // in the calling thread's namespace, ns
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	w := &linkWatch{ns: ns, h: h, names: names, out: out, log: p.log}
	sub, err := w.subscribe()
	if err != nil {
		w.close()
		return nil, err
	}
	go w.run(ctx, sub)
	return out, nil
}

// linkWatch is the state of Changes' goroutine.
type linkWatch struct {
	ns    *os.File        // the namespace Changes was called in
	h     *netlink.Handle // looks up the links of our devices
	names []string
	index map[int]bool // our devices' link indexes, kept from link events
	out   chan struct{}
	log   *slog.Logger
	last  time.Time // of the last signal
}

// eventBuffer is the receive buffer of the route and neighbour
// subscriptions: programming thousands of peers at once notifies as many
// entries, which overflow the default (net.core.rmem_default, 212992 bytes;
// the subscription then ends and the device is checked whole again). It is
// a cap, not an allocation; raising it past rmem_max needs CAP_NET_ADMIN,
// which subnetd has.
const eventBuffer = 8 << 20

// subscription is one set of netlink subscriptions; stop ends them all.
type subscription struct {
	links  chan netlink.LinkUpdate
	addrs  chan netlink.AddrUpdate
	routes chan netlink.RouteUpdate
	neighs chan netlink.NeighUpdate
	done   chan struct{}
	// opened counts the channels, in the order above, that the library
	// took: it closes those when done closes, and only those.
	opened int
}

func (w *linkWatch) subscribe() (*subscription, error) {
	s := &subscription{links: make(chan netlink.LinkUpdate, 64), addrs: make(chan netlink.AddrUpdate, 64),
		routes: make(chan netlink.RouteUpdate, 256), neighs: make(chan netlink.NeighUpdate, 256), done: make(chan struct{})}
	// The sockets are made in w.ns also when run subscribes again from a
	// thread elsewhere (a test running the daemon on one thread of a node
	// namespace). In subnetd every thread is there and DoFile enters nothing:
	// entering even one's own namespace needs CAP_SYS_ADMIN, which the
	// DaemonSet's subnetd lacks.
	err := netns.DoFile(w.ns, s.open)
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("subscribing to link, address, route and neighbour changes: %w", err)
	}
	// Looked up after subscribing, so that a device made in between is seen.
	w.index = map[int]bool{}
	for _, name := range w.names {
		if l, err := w.h.LinkByName(name); err == nil {
			w.index[l.Attrs().Index] = true
		}
	}
	return s, nil
}

// open makes the subscriptions' sockets in the calling thread's namespace.
func (s *subscription) open() error {
	for _, sub := range []func() error{
		func() error { return netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{}) },
		func() error { return netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{}) },
		func() error {
			return netlink.RouteSubscribeWithOptions(s.routes, s.done, netlink.RouteSubscribeOptions{
				ReceiveBufferSize: eventBuffer, ReceiveBufferForceSize: true})
		},
		func() error {
			return netlink.NeighSubscribeWithOptions(s.neighs, s.done, netlink.NeighSubscribeOptions{
				ReceiveBufferSize: eventBuffer, ReceiveBufferForceSize: true})
		},
	} {
		if err := sub(); err != nil {
			return err
		}
		s.opened++
	}
	return nil
}

// stop closes the sockets and drains the channels the library took, so
// that its goroutines, which may be blocked sending, end; a drain of a
// channel it never took would wait forever, once per failed subscribe.
func (s *subscription) stop() {
	close(s.done)
	drains := []func(){func() { drain(s.links) }, func() { drain(s.addrs) }, func() { drain(s.routes) }, func() { drain(s.neighs) }}
	for _, d := range drains[:s.opened] {
		go d()
	}
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}

func (w *linkWatch) close() {
	w.h.Close()
	w.ns.Close()
}

// run signals on changes until ctx ends, subscribing again (after a second,
// the periodic check covering the gap) when a subscription fails.
func (w *linkWatch) run(ctx context.Context, sub *subscription) {
	defer w.close()
	for {
		err := w.follow(ctx, sub)
		sub.stop()
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("following the vxlan device's changes failed; checking it now and subscribing again", "error", err)
		w.signal()
		for sub = nil; sub == nil; {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			if sub, err = w.subscribe(); err != nil {
				w.log.Warn("subscribing again failed; retrying", "error", err)
			}
		}
	}
}

// follow reads one subscription until it fails or ctx ends. A signal that
// comes too soon after the last one is held back until the gap has passed.
func (w *linkWatch) follow(ctx context.Context, sub *subscription) error {
	var held <-chan time.Time
	for {
		ours := false
		select {
		case <-ctx.Done():
			return nil
		case <-held:
			held = nil
			ours = true
		case u, ok := <-sub.links:
			if !ok {
				return fmt.Errorf("link subscription closed")
			}
			ours = w.link(u)
		case u, ok := <-sub.addrs:
			if !ok {
				return fmt.Errorf("address subscription closed")
			}
			ours = w.index[u.LinkIndex]
		case u, ok := <-sub.routes:
			if !ok {
				return fmt.Errorf("route subscription closed")
			}
			ours = u.Type == unix.RTM_DELROUTE && u.Protocol == overlay.RouteProtocol
		case u, ok := <-sub.neighs:
			if !ok {
				return fmt.Errorf("neighbour subscription closed")
			}
			// A deleted entry is reported as failed, not as the permanent
			// one it was: any deletion on our device counts.
			ours = u.Type == unix.RTM_DELNEIGH && w.index[u.LinkIndex]
		}
		if !ours || held != nil {
			continue
		}
		if wait := repairGap - time.Since(w.last); wait > 0 {
			held = time.After(wait)
			continue
		}
		w.signal()
	}
}

// link reports whether u concerns one of our devices, keeping their indexes.
func (w *linkWatch) link(u netlink.LinkUpdate) bool {
	if !slices.Contains(w.names, u.Attrs().Name) {
		return false
	}
	if u.Header.Type == unix.RTM_DELLINK {
		delete(w.index, u.Attrs().Index)
	} else {
		w.index[u.Attrs().Index] = true
	}
	return true
}

// signal tells the daemon, without blocking: one pending signal is enough.
func (w *linkWatch) signal() {
	w.last = time.Now()
	select {
	case w.out <- struct{}{}:
	default:
	}
}
