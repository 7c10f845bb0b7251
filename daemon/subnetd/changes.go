package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// Repairs are signalled at most this often: a device that Ensure cannot get
// right (each attempt a change, hence an event) must not spin the daemon.
const repairGap = 100 * time.Millisecond

// Changes follows the link and address notifications of the namespace the
// calling thread is in (the node's) and signals when one concerns a device
// of ours: deleted, set down, or its MTU, MAC, address or vxlan settings
// changed. Ensure's own writes signal too; the repair they cause writes
// nothing. A subscription that fails (e.g. the socket overran) signals once,
// since events may have been lost, and is made again.
func (o *overlay) Changes(ctx context.Context) (<-chan struct{}, error) {
	out := make(chan struct{}, 1)
	names := o.devices()
	if len(names) == 0 {
		return out, nil // host-gw: no device, no signal
	}
	ns, err := vnetns.Get()
	if err != nil {
		return nil, fmt.Errorf("opening this network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	w := &linkWatch{ns: ns, h: h, names: names, out: out, log: o.log}
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
	ns    vnetns.NsHandle
	h     *netlink.Handle // looks up the link of an address event
	names []string
	out   chan struct{}
	log   *slog.Logger
	last  time.Time // of the last signal
}

// subscription is one pair of netlink subscriptions; stop ends both.
type subscription struct {
	links chan netlink.LinkUpdate
	addrs chan netlink.AddrUpdate
	done  chan struct{}
}

func (w *linkWatch) subscribe() (*subscription, error) {
	s := &subscription{links: make(chan netlink.LinkUpdate, 64), addrs: make(chan netlink.AddrUpdate, 64), done: make(chan struct{})}
	err := netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{Namespace: &w.ns})
	if err == nil {
		err = netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{Namespace: &w.ns})
	}
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("subscribing to link and address changes: %w", err)
	}
	return s, nil
}

// stop closes the sockets and drains the channels, so that the library's
// goroutines, which may be blocked sending, end.
func (s *subscription) stop() {
	close(s.done)
	go func() {
		for range s.links {
		}
	}()
	go func() {
		for range s.addrs {
		}
	}()
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
			ours = slices.Contains(w.names, u.Attrs().Name)
		case u, ok := <-sub.addrs:
			if !ok {
				return fmt.Errorf("address subscription closed")
			}
			l, err := w.h.LinkByIndex(u.LinkIndex)
			ours = err == nil && slices.Contains(w.names, l.Attrs().Name)
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

// signal tells the daemon, without blocking: one pending signal is enough.
func (w *linkWatch) signal() {
	w.last = time.Now()
	select {
	case w.out <- struct{}{}:
	default:
	}
}
