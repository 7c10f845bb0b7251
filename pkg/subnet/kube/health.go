package kube

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// health tells whether the informer's link to the API server works,
// from its own list and watch calls: Check costs the API server nothing.
// The link is up while a watch is open or when the last list or watch
// call succeeded; a watch that ends (the server stopped, or timed it
// out) leaves it up until the informer's next call fails.
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

// listWatch is the informer's ListerWatcher on api, reporting to h.
func listWatch(api NodeAPI, h *health) cache.ListerWatcher {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			l, err := api.List(ctx, opts)
			h.called(err)
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := api.Watch(ctx, opts)
			h.called(err)
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

// trackedWatch passes a watch's events on and tells h while it is open.
type trackedWatch struct {
	inner watch.Interface
	out   chan watch.Event
	stop  chan struct{}
	once  sync.Once
}

func trackWatch(w watch.Interface, h *health) *trackedWatch {
	t := &trackedWatch{inner: w, out: make(chan watch.Event), stop: make(chan struct{})}
	h.watch(1)
	go func() {
		defer close(t.out)
		defer h.watch(-1)
		for ev := range w.ResultChan() {
			select {
			case t.out <- ev:
			case <-t.stop:
				return
			}
		}
	}()
	return t
}

func (t *trackedWatch) ResultChan() <-chan watch.Event { return t.out }

func (t *trackedWatch) Stop() {
	t.once.Do(func() {
		close(t.stop)
		t.inner.Stop()
	})
}
