// Package etcdchild is the program subnetd-etcd (cmd/subnetd-etcd is its
// wiring), subnetd's embedded etcd: a single-member etcd server on
// loopback (pkg/subnet/etcd/embedded), which subnetd runs as its child
// process when it is given no --etcd-endpoints. It is apart from
// internal/subnetd, which holds the parent's side (embedded.go) and never
// imports this package, so that subnetd against an external etcd does not
// carry the server's packages, which cost about 8 MB of resident memory
// just by being linked. It imports pkg/subnet/etcd/embedded and
// internal/version only.
//
// The contract with the parent: it prints "ready" on stdout once the member
// serves clients, and stops (closing the member cleanly) when its stdin
// reaches end of file, that is when the parent closes it or dies, or on
// SIGTERM or SIGINT.
package etcdchild

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	buildversion "github.com/cnisuite/cni/internal/version"
	"github.com/cnisuite/cni/pkg/subnet/etcd/embedded"
)

type options struct {
	dataDir   string
	clientURL string
	peerURL   string
	timeout   time.Duration
}

// Main runs subnetd-etcd with args (the command line without the
// program's name) and returns the process's exit code: 0 after a clean
// stop or --version, 2 for a bad command line, 1 when the member fails.
func Main(args []string) int {
	var o options
	fs := flag.NewFlagSet("subnetd-etcd", flag.ContinueOnError)
	fs.StringVar(&o.dataDir, "data-dir", "", "directory of the member's data")
	fs.StringVar(&o.clientURL, "client-url", "http://127.0.0.1:2379", "loopback URL the member serves clients at")
	fs.StringVar(&o.peerURL, "peer-url", "http://127.0.0.1:2380", "loopback URL of the member's (unused) peer port")
	fs.DurationVar(&o.timeout, "start-timeout", time.Minute, "how long the member may take to start")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println("subnetd-etcd", buildversion.Get())
		return 0
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "subnetd-etcd: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "subnetd-etcd: %v\n", err)
		return 1
	}
	return 0
}

// validate keeps the member on loopback: it has no authentication.
func (o options) validate() error {
	var errs []error
	if o.dataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	for name, u := range map[string]string{"--client-url": o.clientURL, "--peer-url": o.peerURL} {
		p, err := url.Parse(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if ap, err := netip.ParseAddrPort(p.Host); p.Scheme != "http" || err != nil || !ap.Addr().IsLoopback() {
			errs = append(errs, fmt.Errorf("%s %q: want http://LOOPBACK-ADDRESS:PORT, as the member has no authentication", name, u))
		}
	}
	return errors.Join(errs...)
}

// run serves until ctx ends, stdin reaches end of file, or the member fails.
func run(ctx context.Context, o options, stdin io.Reader, stdout io.Writer) error {
	srv, err := embedded.Start(o.dataDir, o.clientURL, o.peerURL, o.timeout)
	if err != nil {
		return err
	}
	defer srv.Close()
	if _, err := fmt.Fprintln(stdout, "ready"); err != nil {
		return fmt.Errorf("telling the parent the member is ready: %w", err)
	}
	parentGone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(parentGone)
	}()
	select {
	case <-ctx.Done():
	case <-parentGone:
	case err := <-srv.Err():
		if err != nil {
			return fmt.Errorf("etcd member failed: %w", err)
		}
	}
	return nil
}
