package subnet

import (
	"context"
	"errors"
	"time"
)

// Backoff bounds for listing again while the store is unreachable.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// DefaultResync is how often Watch lists every lease even though its watch
// is healthy. A watch can lose events without an error: etcd before 3.4.31
// and 3.5.13 skips a watcher that is behind past a compaction without
// telling it (etcd-io/etcd#17529), and before 3.4.33 and 3.5.15 drops a
// delete at a compaction's revision (etcd-io/etcd#18089); either would leave
// a departed or moved peer programmed for good.
const DefaultResync = 5 * time.Minute

// errResync ends a healthy watch when a periodic listing is due.
var errResync = errors.New("periodic listing due")

// Watch calls fn with every lease key each time they change: once after a
// full listing, then after each batch of watch events. A watch that fails or
// whose revision was compacted is followed by a new listing (so no change is
// missed), retried with backoff while the store is unreachable; so is a
// healthy one every Resync (DefaultResync when zero), and a listing that
// finds what the watch missed says so. It returns when ctx ends; fn runs on
// Watch's goroutine.
func (m *Manager) Watch(ctx context.Context, fn func([]Entry)) {
	backoff := minBackoff
	var last map[Subnets]Entry // the view when the last watch ended
	for ctx.Err() == nil {
		entries, rev, err := m.Registry.List(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.Log.Error("listing leases failed; retrying", "error", err, "in", backoff)
			sleep(ctx, backoff)
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		view := make(map[Subnets]Entry, len(entries))
		for _, e := range entries {
			view[e.Subnets] = e
		}
		if missed := differing(last, view); last != nil && len(missed) > 0 {
			m.Log.Warn("the lease watch had missed changes; the listing corrected them", "leases", missed)
		}
		fn(snapshot(view))
		err = m.follow(ctx, view, rev+1, fn)
		last = view
		if ctx.Err() == nil && !errors.Is(err, errResync) {
			m.Log.Warn("lease watch ended; listing again", "error", err)
			last = nil // the watch stopped short; a listing is expected to differ
		}
	}
}

// differing returns the keys of the leases that a and b do not agree on.
func differing(a, b map[Subnets]Entry) []string {
	var keys []string
	for s, e := range a {
		if f, ok := b[s]; !ok || f.Rev != e.Rev {
			keys = append(keys, s.Key())
		}
	}
	for s := range b {
		if _, ok := a[s]; !ok {
			keys = append(keys, s.Key())
		}
	}
	return keys
}

func (m *Manager) resync() time.Duration {
	if m.Resync > 0 {
		return m.Resync
	}
	return DefaultResync
}

// follow applies watch events to view from rev on, until the watch fails.
func (m *Manager) follow(ctx context.Context, view map[Subnets]Entry, rev int64, fn func([]Entry)) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := m.Registry.Watch(wctx, rev)
	due := time.NewTimer(m.resync())
	defer due.Stop()
	for {
		var ev Event
		var ok bool
		select {
		case ev, ok = <-ch:
		case <-due.C:
			return errResync
		}
		for ok {
			if ev.Err != nil {
				return ev.Err
			}
			if ev.Deleted {
				delete(view, ev.Entry.Subnets)
			} else {
				view[ev.Entry.Subnets] = ev.Entry
			}
			// Take what else is pending, so that a burst costs one call of fn.
			select {
			case ev, ok = <-ch:
				continue
			default:
			}
			break
		}
		if !ok {
			return errors.New("watch channel closed")
		}
		fn(snapshot(view))
	}
}

func snapshot(view map[Subnets]Entry) []Entry {
	out := make([]Entry, 0, len(view))
	for _, e := range view {
		out = append(out, e)
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
