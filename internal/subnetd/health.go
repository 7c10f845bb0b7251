package subnetd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
)

// status is what /readyz and /metrics report, written by the daemon's loop.
type status struct {
	mu          sync.Mutex
	window      time.Duration // the store must have answered within it for readiness
	store       string        // etcd (when empty) or the Kubernetes API, for messages
	lease       subnet.Lease
	valid       bool
	waiting     string // why there is no lease, while Acquire fails
	env         bool
	lastEtcd    time.Time
	etcdUp      bool
	peers       int
	skipped     int
	acquired    int
	lost        int
	recErrors   int
	recCount    int
	recSeconds  float64
	recLastSecs float64
}

func (s *status) setLease(l subnet.Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.Subnets != s.lease.Subnets || !s.valid {
		s.acquired++
	}
	s.lease, s.valid, s.waiting = l, true, ""
}

// setWaiting records why no lease could be acquired, for /readyz.
func (s *status) setWaiting(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting = why
}

// storeName is what the daemon's leases come from, for messages.
func (s *status) storeName() string {
	if s.store == "" {
		return "etcd"
	}
	return s.store
}

func (s *status) leaseLost() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.valid = false
	s.lost++
}

func (s *status) setEnv(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.env = ok
}

func (s *status) envOK() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.env
}

func (s *status) etcdOK(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastEtcd, s.etcdUp = t, true
}

func (s *status) etcdFailed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.etcdUp = false
}

func (s *status) reconcileError() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recErrors++
}

func (s *status) reconciled(took time.Duration, peers int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recCount++
	s.recSeconds += took.Seconds()
	s.recLastSecs = took.Seconds()
	if err != nil {
		s.recErrors++
		return
	}
	s.peers = peers
}

func (s *status) setSkipped(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.skipped = n
}

// notReady says why the node is not ready, or "" when it is: a valid lease,
// subnet.env written and the store heard from within the window.
func (s *status) notReady(now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.why(now)
}

// why is notReady for callers that hold mu.
func (s *status) why(now time.Time) string {
	var why []string
	if !s.valid && s.waiting != "" {
		why = append(why, "no valid lease: "+s.waiting)
	} else if !s.valid {
		why = append(why, "no valid lease")
	} else if !s.lease.Expiry.IsZero() && now.After(s.lease.Expiry) {
		why = append(why, "lease expired")
	}
	if !s.env {
		why = append(why, "subnet.env not written")
	}
	if s.lastEtcd.IsZero() || now.Sub(s.lastEtcd) > s.window {
		why = append(why, fmt.Sprintf("%s not reached within %v", s.storeName(), s.window))
	}
	return strings.Join(why, "; ")
}

// metrics writes the Prometheus text exposition by hand: a client library
// would cost more memory than the daemon's own state.
func (s *status) metrics(now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", name, help, name, name, strconv.FormatFloat(v, 'g', -1, 64))
	}
	counter := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %s\n", name, help, name, name, strconv.FormatFloat(v, 'g', -1, 64))
	}
	gauge("subnetd_lease_valid", "1 while the node holds a valid lease.", b2f(s.valid))
	if !s.lease.Expiry.IsZero() {
		gauge("subnetd_lease_expiry_timestamp_seconds", "When the lease expires unless renewed.", float64(s.lease.Expiry.Unix()))
	}
	counter("subnetd_lease_acquisitions_total", "Leases acquired, first or again.", float64(s.acquired))
	counter("subnetd_lease_losses_total", "Leases found lost or taken over.", float64(s.lost))
	gauge("subnetd_peers", "Peers programmed by the last reconcile.", float64(s.peers))
	gauge("subnetd_leases_skipped", "Other nodes' leases not programmed (malformed, not the network's, or taking over this node's addresses or routes; each logged).", float64(s.skipped))
	counter("subnetd_reconcile_errors_total", "Failed data-plane set-ups and reconciles.", float64(s.recErrors))
	fmt.Fprintf(&b, "# HELP subnetd_reconcile_duration_seconds Time spent programming peers.\n# TYPE subnetd_reconcile_duration_seconds summary\n")
	fmt.Fprintf(&b, "subnetd_reconcile_duration_seconds_sum %s\nsubnetd_reconcile_duration_seconds_count %d\n", strconv.FormatFloat(s.recSeconds, 'g', -1, 64), s.recCount)
	gauge("subnetd_last_reconcile_duration_seconds", "Duration of the last reconcile.", s.recLastSecs)
	// Named etcd in either mode, so that dashboards keep working.
	gauge("subnetd_etcd_reachable", "1 when the last "+s.storeName()+" call succeeded.", b2f(s.etcdUp))
	if !s.lastEtcd.IsZero() {
		gauge("subnetd_etcd_last_contact_timestamp_seconds", "When "+s.storeName()+" last answered.", float64(s.lastEtcd.Unix()))
	}
	gauge("subnetd_ready", "1 when /readyz reports ready.", b2f(s.why(now) == ""))
	return b.String()
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// serveHealth serves /healthz, /readyz and /metrics until ctx ends.
func serveHealth(ctx context.Context, addr string, s *status, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := s.notReady(time.Now()); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, s.metrics(time.Now()))
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health endpoint: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health endpoint stopped", "error", err)
		}
	}()
	log.Info("serving /healthz, /readyz and /metrics", "address", l.Addr().String())
	return nil
}
