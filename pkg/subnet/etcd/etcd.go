// Package etcd stores subnetd's network config and leases in etcd v3 with
// flanneld's key layout: <prefix>/config and <prefix>/subnets/<key>, and
// subnetd's presence records in <prefix>/subnetd/nodes/<node ID>. Every
// write is a transaction that compares the key's revision; leased keys hang
// on one etcd lease per client, kept alive, never orphaned; a presence
// record on a short one of its own, renewed in the background; every call
// has a deadline.
//
// Of the suite it imports only pkg/subnet, and never the server
// (pkg/subnet/etcd/embedded).
package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultPrefix is flanneld's.
const DefaultPrefix = "/coreos.com/network"

// Options say how to reach etcd.
type Options struct {
	Endpoints []string
	Prefix    string        // DefaultPrefix when empty
	TLS       *tls.Config   // nil: plain connections
	Username  string        // with Password: etcd authentication
	Password  string        //
	TTL       time.Duration // of the etcd lease leased keys hang on
	Timeout   time.Duration // deadline of each call
	// LeaseOwner, when set (the node's ID), fixes the ID of the etcd lease
	// this client grants (LeaseIDFor): a run killed between granting it and
	// writing its key leaves no orphan lease for the TTL, since the next
	// run's grant finds that lease and takes it over. Empty: etcd picks.
	LeaseOwner string
}

// Registry implements subnet.Registry on an etcd client.
type Registry struct {
	cli     *clientv3.Client
	prefix  string
	ttl     time.Duration
	timeout time.Duration
	tls     *tls.Config // nil on plain connections; probed to explain a timeout

	presenceTTL time.Duration
	closed      chan struct{} // closed by Close: ends keepPresence
	closeOnce   sync.Once
	keeping     sync.Once // starts keepPresence at the first claim

	mu       sync.Mutex
	lease    clientv3.LeaseID // 0 until a leased write needs one
	leaseID  clientv3.LeaseID // the ID to grant under; 0: etcd picks
	presence clientv3.LeaseID // the presence record's lease; 0 until claimed
}

var _ subnet.Registry = (*Registry)(nil)

// New connects to etcd; the connection is made lazily, so New does not fail
// when etcd is down: the first call does, by its deadline.
func New(o Options) (*Registry, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.TTL < time.Second || o.Timeout <= 0 {
		return nil, fmt.Errorf("lease TTL %v and call timeout %v: want at least 1s and more than 0", o.TTL, o.Timeout)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: o.Endpoints, TLS: o.TLS, Username: o.Username, Password: o.Password,
		DialTimeout: o.Timeout, DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: o.Timeout,
		// The client's own logger would print every retry; callers log the errors.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(o.Endpoints, ","), err)
	}
	r := &Registry{cli: cli, prefix: strings.TrimRight(o.Prefix, "/"), ttl: o.TTL, timeout: o.Timeout, tls: o.TLS,
		presenceTTL: subnet.PresenceTTL, closed: make(chan struct{})}
	if o.LeaseOwner != "" {
		r.leaseID = LeaseIDFor(r.prefix, o.LeaseOwner)
	}
	return r, nil
}

// Close closes the client; the etcd lease stays, to be adopted by the next
// run, and so does the presence record until its TTL ends unrenewed.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	return r.cli.Close()
}

// TLSConfig builds the client TLS settings from flanneld's three files: a CA
// alone verifies the server; a certificate and key also authenticate us.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA file %s holds no PEM certificate", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("give both --etcd-certfile and --etcd-keyfile, or neither")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func (r *Registry) configKey() string           { return r.prefix + "/config" }
func (r *Registry) subnetsDir() string          { return r.prefix + "/subnets/" }
func (r *Registry) key(s subnet.Subnets) string { return r.subnetsDir() + s.Key() }
func (r *Registry) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// wrap gives etcd's errors the domain's meaning and says where etcd was.
func (r *Registry) wrap(what string, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return fmt.Errorf("%s: %w", what, subnet.ErrLeaseGone)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: etcd at %s did not answer within %v%s: %w", what, strings.Join(r.cli.Endpoints(), ","), r.timeout, r.tlsTrouble(), err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// tlsTrouble explains a timeout that a refused TLS handshake caused: the
// client retries those silently until the deadline, so without this the
// operator of a wrong CA or a missing client certificate sees only "did not
// answer". It returns "" on plain connections or when every handshake works.
func (r *Registry) tlsTrouble() string {
	if r.tls == nil {
		return ""
	}
	for _, ep := range r.cli.Endpoints() {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			continue
		}
		if err := probeTLS(u.Host, r.tls, r.timeout); err != nil {
			return fmt.Sprintf(" (TLS with %s failed: %v; check --etcd-cafile, --etcd-certfile and --etcd-keyfile)", u.Host, err)
		}
	}
	return ""
}

// probeTLS makes one handshake with addr and reads briefly, since under TLS
// 1.3 a server refuses a client certificate only after the client's side of
// the handshake is done. A read that times out means the session was accepted.
func probeTLS(addr string, base *tls.Config, timeout time.Duration) error {
	c := base.Clone()
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(addr)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
