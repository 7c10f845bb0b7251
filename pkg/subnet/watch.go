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

// Watch calls fn with every lease key each time they change: once after a
// full listing, then after each batch of watch events. A watch that fails or
// whose revision was compacted is followed by a new listing (so no change is
// missed), retried with backoff while the store is unreachable. It returns
// when ctx ends; fn runs on Watch's goroutine.
func (m *Manager) Watch(ctx context.Context, fn func([]Entry)) {
	backoff := minBackoff
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
		fn(snapshot(view))
		err = m.follow(ctx, view, rev+1, fn)
		if ctx.Err() == nil {
			m.Log.Warn("lease watch ended; listing again", "error", err)
		}
	}
}

// follow applies watch events to view from rev on, until the watch fails.
func (m *Manager) follow(ctx context.Context, view map[Subnets]Entry, rev int64, fn func([]Entry)) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := m.Registry.Watch(wctx, rev)
	for {
		ev, ok := <-ch
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
