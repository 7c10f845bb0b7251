// Package embedded runs a single-member etcd server for a node (or a test)
// that has no etcd cluster. It is apart from pkg/subnet/etcd, the client,
// because the server's packages cost a process about 8 MB of memory just by
// being linked (their package-level init and the pages it touches): subnetd
// runs it in a child process, cmd subnetd-etcd, only when it needs it.
//
// It imports nothing of the suite, and nothing of the suite but subnetd-etcd's
// program and tests may import it.
package embedded

import (
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Server is a single-member etcd run inside the process. It listens on the
// URLs it is given; callers keep them on loopback.
type Server struct {
	e       *embed.Etcd
	closing atomic.Bool // set by Close: the errors of the stop are not logged
}

// Start runs a member with its data under dir, serving clients at
// clientURL and its (unused) peer port at peerURL, both loopback addresses.
// It returns once the member serves, or fails after timeout.
func Start(dir, clientURL, peerURL string, timeout time.Duration) (*Server, error) {
	cu, err := url.Parse(clientURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client URL: %w", err)
	}
	pu, err := url.Parse(peerURL)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd peer URL: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "subnetd"
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	s := &Server{}
	lg, err := newLogger(&s.closing)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd logger: %w", err)
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	// Keep an hour of history so that watches resume; older revisions go.
	cfg.AutoCompactionMode, cfg.AutoCompactionRetention = embed.CompactorModePeriodic, "1h"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting the embedded etcd in %s: %w", dir, err)
	}
	s.e = e
	select {
	case <-e.Server.ReadyNotify():
		return s, nil
	case err := <-e.Err():
		s.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", dir, err)
	case <-time.After(timeout):
		s.Close()
		return nil, fmt.Errorf("embedded etcd in %s not ready after %v", dir, timeout)
	}
}

// Endpoint is the URL clients connect to.
func (s *Server) Endpoint() string { return s.e.Clients[0].Addr().String() }

// Close stops the member; its data stays in its directory.
func (s *Server) Close() {
	s.closing.Store(true)
	s.e.Close()
}

// Err reports a failure of the running member; it is closed when the
// member stops.
func (s *Server) Err() <-chan error { return s.e.Err() }
