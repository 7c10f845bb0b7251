// Package subnetd is the node daemon subnetd (cmd/subnetd is its wiring):
// it leases this node's pod subnet in etcd, or takes its Node's pod CIDR in
// the Kubernetes API (--kube-subnet-mgr), writes subnet.env and programs
// the overlay to every other node, sharing etcd or the Node annotations,
// and the overlay, with flanneld nodes: flags -> Config.Validate() -> run(ctx)
// -> one exit code, which Main returns. The overlay is the backend (vxlan or
// host-gw) that pkg/overlay's New chooses from the network config; subnetd
// turns the leases into its peers (subnet.LeasePeers), so that the overlay
// sees peers only.
//
// It owns the daemon's command line, its loop (lease, subnet.env, host
// rules, data plane, repairs), /healthz and /readyz, the embedded etcd's
// parent side and the hand-over to subnetd-kube. It is internal because
// nothing outside its binaries (subnetd, subnetd-kube) may import it. It
// imports pkg/ and internal/version only: never a plugin package, cmd/,
// nor its sub-package etcdchild (the etcd server's packages would cost
// every node about 8 MB, which is why subnetd-etcd is a binary of its
// own). Its Kubernetes API mode (kube.go) is left out by the build tag
// nokube.
package subnetd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	buildversion "github.com/cnisuite/cni/internal/version"
	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
	subnetetcd "github.com/cnisuite/cni/pkg/subnet/etcd"
)

// Main runs subnetd with args (the command line without the program's
// name) until SIGINT or SIGTERM, and returns the process's exit code: 0
// after --help or --version, 2 for a bad command line or a failed hand-over
// to subnetd-kube, 1 when the daemon fails. Errors go to stderr.
func Main(args []string) int {
	cfg, err := parseCommandLine(args, os.Getenv, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0 // the usage is printed; flanneld exits 0 too
	case errors.Is(err, errFlagSyntax):
		return 2 // the flag package printed what is wrong
	case err == nil && cfg.Version:
		fmt.Println("subnetd", buildversion.Get())
		return 0
	case err == nil && cfg.KubeSubnetMgr && kubeMode == nil:
		fmt.Fprintf(os.Stderr, "subnetd: %v\n", handOverKube(args))
		return 2
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "subnetd: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "subnetd: %v\n", err)
		return 1
	}
	return 0
}

// newLogger logs to w at level, as logfmt text or, for log shippers, one
// JSON object per line (--log-format json).
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func run(parent context.Context, cfg *Config) error {
	log := newLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	for _, w := range cfg.deprecated {
		log.Warn(w)
	}
	lock, err := lockDataDir(cfg.DataDir, !cfg.Cleanup)
	if err != nil {
		if cfg.Cleanup && errors.Is(err, errRunning) {
			return fmt.Errorf("--cleanup refused, as the running daemon would put everything back: %w", err)
		}
		return err
	}
	if lock != nil {
		defer lock.Close()
	}
	if cfg.Cleanup {
		return cleanup(cfg, log)
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	ul, err := findUnderlay(cfg, log)
	if err != nil {
		return err
	}
	src, err := openSource(ctx, cfg, ul, log, cancel)
	if err != nil {
		return err
	}
	defer src.close()
	st := &status{window: 2*cfg.CheckInterval + cfg.EtcdTimeout, store: src.store}
	if cfg.HealthzPort > 0 {
		addr := net.JoinHostPort(cfg.HealthzIP, strconv.Itoa(cfg.HealthzPort))
		if err := serveHealth(ctx, addr, st, log); err != nil {
			return err
		}
	}
	d := newDaemon(ctx, cfg, src, st, log)
	log.Info("subnetd starting", "version", buildversion.Get().String(), "node", src.id, "source", src.store, "interface", ul.name, "public_ip", ul.public[family.IPv4], "public_ipv6", ul.public[family.IPv6], "backend", src.network.Backend.Type)
	err = d.serve(ctx)
	notify(log, "STOPPING=1")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	if err := context.Cause(ctx); errors.Is(err, errEmbeddedExited) {
		return err // the data plane stays, as at any other exit
	}
	return d.shutdown()
}

// newDaemon wires the daemon to the source, the overlay and the host
// rules, and starts re-applying those every --iptables-resync, with
// --ip-blackhole-route's routes, until ctx ends. The daemon tells the
// service manager it is ready once subnet.env is first written, that is
// with a lease held.
func newDaemon(ctx context.Context, cfg *Config, src source, st *status, log *slog.Logger) *daemon {
	rules := &resyncedRules{hostRules: hostRulesFor(src.network.EnableNFTables, log)}
	var dp dataPlane = src.plane
	var bh *blackholes
	if cfg.BlackholeRoute {
		bh = &blackholes{log: log}
		dp = blackholePlane{dataPlane: src.plane, bh: bh}
	}
	go resyncHost(ctx, time.Duration(cfg.IPTablesResync)*time.Second, rules, bh, st, log)
	return &daemon{cfg: cfg, log: log, src: src.Source, dp: dp, rules: rules, st: st,
		filter: &peerFilter{config: src.network, log: log}, wroteEnv: sync.OnceFunc(func() { notify(log, "READY=1") })}
}

// notify tells the service manager state (sdNotify); a failure is logged,
// as the daemon works on without.
func notify(log *slog.Logger, state string) {
	if err := sdNotify(state); err != nil {
		log.Warn("the service manager was not told", "error", err)
	}
}

// openRegistry connects to --etcd-endpoints, or starts the embedded etcd;
// should that die, cancel ends the daemon with errEmbeddedExited.
func openRegistry(cfg *Config, log *slog.Logger, cancel context.CancelCauseFunc) (subnet.Registry, func(), error) {
	tlsCfg, err := subnetetcd.TLSConfig(cfg.EtcdCAFile, cfg.EtcdCertFile, cfg.EtcdKeyFile)
	if err != nil {
		return nil, nil, err
	}
	endpoints := cfg.endpoints()
	stopServer := func() {}
	if len(endpoints) == 0 {
		dir := filepath.Join(cfg.DataDir, "etcd")
		child, err := startEmbedded(dir, cfg.EmbeddedClient, cfg.EmbeddedPeer, time.Minute, log)
		if err != nil {
			return nil, nil, err
		}
		log.Info("running an embedded single-member etcd", "data", dir, "clients", cfg.EmbeddedClient, "pid", child.cmd.Process.Pid)
		stopping := make(chan struct{})
		go func() {
			select {
			case <-child.done:
				cancel(fmt.Errorf("%w: %v", errEmbeddedExited, child.err))
			case <-stopping:
			}
		}()
		endpoints = []string{cfg.EmbeddedClient}
		stopServer = func() { close(stopping); child.stop(stopGrace, log) }
	}
	reg, err := subnetetcd.New(subnetetcd.Options{Endpoints: endpoints, Prefix: cfg.EtcdPrefix, TLS: tlsCfg,
		Username: cfg.EtcdUsername, Password: cfg.EtcdPassword, TTL: cfg.LeaseTTL, Timeout: cfg.EtcdTimeout, LeaseOwner: cfg.NodeID})
	if err != nil {
		stopServer()
		return nil, nil, err
	}
	return reg, func() { reg.Close(); stopServer() }, nil
}

// loadNetConfig reads the network config from etcd, storing --net-config's
// when etcd has none, and refuses a --net-config that differs from etcd's.
// An unreachable etcd or a missing config is retried.
func loadNetConfig(ctx context.Context, reg subnet.Registry, file string, log *slog.Logger) (subnet.Config, error) {
	var want []byte
	var wantCfg subnet.Config
	if file != "" {
		var err error
		if want, wantCfg, err = readNetConfig("--net-config", file); err != nil {
			return subnet.Config{}, err
		}
	}
	backoff := 200 * time.Millisecond
	for {
		raw, err := slowCall(ctx, log, "etcd", "reading the network config", reg.Config)
		if errors.Is(err, subnet.ErrNotFound) && want != nil {
			if err = reg.CreateConfig(ctx, want); err == nil {
				log.Info("stored the network config", "from", file)
				return wantCfg, nil
			}
		}
		if err == nil {
			have, err := subnet.ParseConfig(raw)
			if err != nil {
				return subnet.Config{}, fmt.Errorf("the network config in etcd is unusable; fix it with etcdctl: %w", err)
			}
			if want != nil && !have.Equal(wantCfg) {
				return subnet.Config{}, fmt.Errorf("etcd holds a different network config (%s) than --net-config %s (%s): the cluster's network cannot change under running nodes; drop --net-config, or make it match", raw, file, want)
			}
			return have, nil
		}
		if errors.Is(err, subnet.ErrNotFound) {
			log.Error("no network config in etcd; store one (etcdctl put <prefix>/config '{\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}') or pass --net-config", "error", err)
		} else {
			log.Error("reading the network config failed; retrying", "error", err, "in", backoff)
		}
		select {
		case <-ctx.Done():
			return subnet.Config{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// cleanup removes what subnetd made on this node: devices, routes, host
// rules, the subnet file. The lease in etcd is left to expire (or be reused by the
// node when it comes back).
func cleanup(cfg *Config, log *slog.Logger) error {
	var errs []error
	if err := overlay.Cleanup(); err != nil {
		errs = append(errs, err)
	}
	// --ip-blackhole-route's routes, of the subnets subnet.env names
	// (whatever the flag now says).
	if env, err := envfile.Read(cfg.SubnetFile); err == nil {
		errs = append(errs, removeBlackholes(subnetsOf(env.Subnet, env.IPv6Subnet)...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := (&exclusiveRules{hostRules: hostrules.IPTables{}, other: hostrules.NFTables{}}).Teardown(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(cfg.SubnetFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	log.Info("removed subnetd's devices, routes, host rules and subnet file")
	return nil
}
