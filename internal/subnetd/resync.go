package subnetd

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
)

// resyncedRules is the host rules that resyncHost re-applies between the
// daemon's checks: the last ones the daemon asked for.
type resyncedRules struct {
	hostRules
	mu      sync.Mutex
	last    *hostrules.Rules // nil until the daemon's first
	stopped bool             // torn down: nothing is applied again
}

func (r *resyncedRules) Ensure(ctx context.Context, want hostrules.Rules) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil, nil
	}
	fixed, err := r.hostRules.Ensure(ctx, want)
	if !errors.Is(err, hostrules.ErrRandomFullyUnsupported) { // the daemon asks again without at once
		r.last = &want
	}
	return fixed, err
}

func (r *resyncedRules) Teardown(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	return r.hostRules.Teardown(ctx)
}

// resync re-applies the last rules the daemon asked for.
func (r *resyncedRules) resync(ctx context.Context) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || r.last == nil {
		return nil, nil
	}
	return r.hostRules.Ensure(ctx, *r.last)
}

// resyncHost re-applies the host rules, and the blackhole routes when bh
// is not nil, every period until ctx ends: flanneld's --iptables-resync, so
// that what someone removed is back within it rather than at the daemon's
// next check (--check-interval), which applies them too. A failure is
// logged once per change of its message.
func resyncHost(ctx context.Context, period time.Duration, rules *resyncedRules, bh *blackholes, st *status, log *slog.Logger) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		fixed, err := rules.resync(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			st.reconcileError()
			if err.Error() != lastErr {
				log.Error("re-applying the host rules failed; retrying", "error", err, "every", period)
			}
		case len(fixed) > 0:
			log.Info("applied host rules", "changes", fixed)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		if bh != nil {
			bh.ensure()
		}
	}
}
