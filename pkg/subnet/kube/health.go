package kube

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// health tells whether the informer's link to the API server works,
// from its own list and watch calls: Check costs the API server nothing.
// The link is up while a watch is open or when the last list or watch
// call succeeded; a watch that ends (the server stopped, or timed it
// out) leaves it up until the informer's next call fails, which follows
// at once.
type health struct {
	mu       sync.Mutex
	watching int       // watches open
	err      error     // of the last call, nil when it succeeded
	since    time.Time // of the first failure in a row
}

func (h *health) called(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil && h.err == nil {
		h.since = time.Now()
	}
	h.err = err
}

func (h *health) watch(delta int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watching += delta
}

// check returns why the API server is unreachable, or nil.
func (h *health) check() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watching > 0 || h.err == nil {
		return nil
	}
	return fmt.Errorf("the Kubernetes API unreachable for %v: %w", time.Since(h.since).Round(time.Second), h.err)
}

// listWatch is the informer's ListerWatcher on api, reporting to h; its
// lists hold the Nodes as keep makes them.
func listWatch(api NodeAPI, h *health, keep cache.TransformFunc) cache.ListerWatcher {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return listPages(ctx, h, api, keep, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := retried(ctx, h, func(ctx context.Context) (watch.Interface, error) { return api.Watch(ctx, opts) })
			if err != nil {
				return nil, err
			}
			return trackWatch(w, h), nil
		},
	}
	// A client that cannot stream the initial list as a watch (a fake)
	// says so; the reflector then lists.
	return cache.ToListWatcherWithWatchListSemantics(lw, api)
}

// maxRetryDelay bounds the wait between calls while the API server is
// unreachable: the node follows it again at most this long after it is back.
const maxRetryDelay = 5 * time.Second

// retried makes the call again while the API server is unreachable or
// overloaded, until it answers or ctx ends, so that client-go's reflector
// sees no failure: its own delays grow to 30-60 s across an outage (its
// watch retries and relists share them), and would leave the node's view
// stale, and the node unready, for as long after the API server is back.
// Answers the reflector acts on (410 Gone: list again; 403) reach it.
func retried[T any](ctx context.Context, h *health, call func(context.Context) (T, error)) (T, error) {
	delay := 500 * time.Millisecond
	for {
		v, err := call(ctx)
		h.called(err)
		if err == nil || ctx.Err() != nil || !retriable(err) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(delay/2 + rand.N(delay/2)): // jittered: the nodes do not call in step
		}
		delay = min(2*delay, maxRetryDelay)
	}
}

// retriable reports whether err is the API server's absence or overload
// rather than its answer.
func retriable(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true // no answer: refused, reset, timed out
	}
	return apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err)
}

// trackedWatch tells h while a watch is open: from its start until the
// reflector stops it, which it does as soon as the watch ends. Its events
// go to the reflector straight from the watch: no goroutine in between,
// so an event reaches the informer one hand-off sooner.
type trackedWatch struct {
	watch.Interface
	h    *health
	once sync.Once
}

func trackWatch(w watch.Interface, h *health) *trackedWatch {
	h.watch(1)
	return &trackedWatch{Interface: w, h: h}
}

func (t *trackedWatch) Stop() {
	t.once.Do(func() {
		t.Interface.Stop()
		t.h.watch(-1)
	})
}
