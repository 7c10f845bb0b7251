package subnetd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// daemon keeps this node's lease, subnet.env and data plane in step with
// the source of leases.
type daemon struct {
	cfg    *Config
	log    *slog.Logger
	src    subnet.Source
	dp     dataPlane
	rules  hostRules
	filter *peerFilter
	st     *status
	// wroteEnv, when set, is called after each write of subnet.env: the
	// service manager is told the node is ready (sd_notify).
	wroteEnv func()

	lease   subnet.Lease
	entries []subnet.Entry // the last view of every lease
	rulesCh chan hostrules.Rules
}

// serve runs until ctx ends: acquire, program, then follow the leases and
// check the lease, the store (etcd or the Kubernetes API) and the data
// plane every CheckInterval. The store being unreachable never stops it,
// nor touches the data plane.
func (d *daemon) serve(ctx context.Context) error {
	// Subscribed first, so that no change after the first Ensure is missed.
	changes, err := d.dp.Changes(ctx)
	if err != nil {
		d.log.Error("cannot follow changes of the vxlan device; they are repaired at the periodic check only", "error", err)
	}
	d.rulesCh = make(chan hostrules.Rules, 1)
	rulesDone := make(chan struct{})
	go func() { defer close(rulesDone); d.keepRules(ctx) }()
	defer func() { <-rulesDone }() // ended before shutdown touches the rules
	if err := d.acquire(ctx); err != nil {
		return err
	}
	snaps := make(chan view, 1)
	go d.src.Watch(ctx, func(es []subnet.Entry) {
		v := view{entries: es, at: time.Now()}
		select { // keep only the newest view
		case <-snaps:
		default:
		}
		snaps <- v
	})
	tick := time.NewTicker(d.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case v := <-snaps:
			d.entries = v.entries
			d.st.etcdOK(time.Now())
			if !d.stillOurs() {
				d.check(ctx) // confirm with a read before acting on a view
			}
			d.reconcile(v.at, false)
		case <-changes:
			d.ensure(ctx)
			d.reconcile(time.Time{}, true)
		case <-tick.C:
			d.check(ctx)
			d.ensure(ctx)
			d.reconcile(time.Time{}, true)
		}
	}
}

// notAssignedRetry is how often Acquire is tried again while the node has
// no pod CIDR: a read of the informer's cache, no API request, so that the
// node is ready well within a second of the assignment.
const notAssignedRetry = 250 * time.Millisecond

// identityRetry is how often a node whose identity another node holds
// reads that node's presence record again (an etcd read), to proceed soon
// after it expired.
const identityRetry = 2 * time.Second

// acquire takes the lease, retrying with backoff while the source fails;
// the first failure is logged at once. A node without a subnet assigned,
// or whose identity another live node holds, waits, logged once (per
// cause), and reports why on /readyz.
func (d *daemon) acquire(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	waiting := "" // the unassigned state last logged
	for {
		l, err := slowCall(ctx, d.log, d.st.storeName(), "acquiring a lease", d.src.Acquire)
		if err == nil {
			d.st.etcdOK(time.Now())
			d.setLease(ctx, l)
			return nil
		}
		d.st.setWaiting(err.Error())
		wait := backoff
		switch {
		case errors.Is(err, subnet.ErrNotAssigned), errors.Is(err, subnet.ErrIdentityInUse):
			d.st.etcdOK(time.Now()) // it answered: no subnet for this node yet, or not while another holds its identity
			if err.Error() != waiting {
				d.log.Error("failed to acquire lease; waiting", "error", err)
				waiting = err.Error()
			}
			wait = notAssignedRetry
			if errors.Is(err, subnet.ErrIdentityInUse) {
				wait = identityRetry
			}
		case errors.Is(err, subnet.ErrNoSubnets):
			d.log.Error("no subnet to lease; retrying", "error", err, "in", backoff)
		default:
			d.log.Error("acquiring a lease failed; retrying", "error", err, "in", backoff)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		if wait == backoff {
			backoff = min(2*backoff, 10*time.Second)
		}
	}
}

// hostRules keeps flanneld's masquerade and forward rules (pkg/netfilter/hostrules).
type hostRules interface {
	Ensure(ctx context.Context, r hostrules.Rules) ([]string, error)
	Teardown(ctx context.Context) error
}

// wantRules is the host rules for the lease and the flags.
func (d *daemon) wantRules() hostrules.Rules {
	r := hostrules.Rules{Masq: d.cfg.IPMasq, Forward: d.cfg.ForwardRules, NoRandomFully: d.cfg.NoRandomFully}
	c := d.src.Network()
	if s := d.lease.Subnets; s.V4.IsValid() {
		r.Nets = append(r.Nets, hostrules.Net{Network: c.Network, Subnet: s.V4})
	}
	if s := d.lease.Subnets; s.V6.IsValid() {
		r.Nets = append(r.Nets, hostrules.Net{Network: c.IPv6Network, Subnet: s.V6})
	}
	return r
}

// keepRules applies the host rules ensure hands over, until ctx ends. It
// runs on a goroutine of its own: iptables-save and -restore are processes
// (tens of ms on a loaded node), which must not delay a lease event.
func (d *daemon) keepRules(ctx context.Context) {
	noRandomFully := false // this iptables or kernel lacks it
	for {
		var r hostrules.Rules
		select {
		case <-ctx.Done():
			return
		case r = <-d.rulesCh:
		}
		r.NoRandomFully = r.NoRandomFully || noRandomFully
		fixed, err := d.rules.Ensure(ctx, r)
		if errors.Is(err, hostrules.ErrRandomFullyUnsupported) && !r.NoRandomFully {
			d.log.Warn("masquerading without --random-fully, which this iptables or kernel lacks")
			noRandomFully, r.NoRandomFully = true, true
			fixed, err = d.rules.Ensure(ctx, r)
		}
		switch {
		case ctx.Err() != nil:
			return // stopping: the iptables-save the stop interrupted is no failure
		case err != nil:
			d.st.reconcileError()
			d.log.Error("applying the host rules failed; retrying at the next check", "error", err)
		case len(fixed) > 0:
			d.log.Info("applied host rules", "changes", fixed)
		}
	}
}

// ensureRules hands the rules for the lease to keepRules; only the newest
// waits.
func (d *daemon) ensureRules() {
	select {
	case <-d.rulesCh:
	default:
	}
	d.rulesCh <- d.wantRules()
}

// setLease adopts a new or changed lease: devices, subnet.env, status.
func (d *daemon) setLease(ctx context.Context, l subnet.Lease) {
	changed := l.Subnets != d.lease.Subnets
	d.lease = l
	d.st.setLease(l)
	if changed {
		args := []any{"subnet", l.Subnets}
		if l.Reserved || !l.Expiry.IsZero() { // an etcd lease; a pod CIDR has neither
			args = append(args, "reservation", l.Reserved, "expires", l.Expiry)
		}
		d.log.Info("holding lease", args...)
		d.filter.setConfig(d.src.Network())
		d.ensure(ctx)
	}
}

// ensure sets up the host rules and devices for the lease and (re)writes subnet.env when
// it is missing or its content would change.
func (d *daemon) ensure(ctx context.Context) {
	d.ensureRules()
	mtu, err := d.dp.Ensure(d.lease.Subnets)
	if err != nil {
		d.st.reconcileError()
		d.log.Error("setting up the data plane failed; retrying at the next check", "error", err)
		if mtu == 0 {
			return
		}
	}
	env := d.env(mtu)
	if cur, err := envfile.Read(d.cfg.SubnetFile); err == nil && cur == env && d.st.envOK() {
		return
	}
	if err := envfile.Write(d.cfg.SubnetFile, env); err != nil {
		d.st.setEnv(false)
		d.log.Error("writing subnet.env failed", "error", err)
		return
	}
	d.st.setEnv(true)
	d.log.Info("wrote subnet.env", "path", d.cfg.SubnetFile, "subnet", d.lease.Subnets, "mtu", mtu)
	if d.wroteEnv != nil {
		d.wroteEnv()
	}
}

func (d *daemon) env(mtu int) envfile.Env {
	c := d.src.Network()
	e := envfile.Env{MTU: mtu, IPMasq: d.cfg.IPMasq}
	if s := d.lease.Subnets; s.V4.IsValid() {
		e.Network, e.Subnet = c.Network, envfile.FirstHost(s.V4)
	}
	if s := d.lease.Subnets; s.V6.IsValid() {
		e.IPv6Network, e.IPv6Subnet = c.IPv6Network, envfile.FirstHost(s.V6)
	}
	return e
}

// stillOurs reports whether the last view holds our key with our value.
func (d *daemon) stillOurs() bool {
	for _, e := range d.entries {
		if e.Subnets == d.lease.Subnets {
			return d.src.Owns(d.lease, e)
		}
	}
	return false
}

// check confirms and renews the lease; a lost one is acquired again.
func (d *daemon) check(ctx context.Context) {
	l, err := slowCall(ctx, d.log, d.st.storeName(), "checking the lease", func(ctx context.Context) (subnet.Lease, error) { return d.src.Check(ctx, d.lease) })
	switch {
	case err == nil:
		d.st.etcdOK(time.Now())
		d.lease = l
		d.st.setLease(l)
	case errors.Is(err, subnet.ErrLeaseLost):
		d.st.etcdOK(time.Now())
		d.st.leaseLost()
		d.log.Warn("lease lost; acquiring again", "subnet", d.lease.Subnets, "error", err)
		if l, err := d.src.Acquire(ctx); err != nil {
			d.st.setWaiting(err.Error())
			d.log.Error("acquiring again failed; retrying at the next check", "error", err)
		} else {
			d.setLease(ctx, l)
		}
	case ctx.Err() == nil:
		d.st.etcdFailed()
		d.log.Error(d.st.storeName()+" unreachable; the data plane stays as it is, retrying at the next check", "error", err, "every", d.cfg.CheckInterval)
	}
}

// view is the leases as a watch callback got them, and when.
type view struct {
	entries []subnet.Entry
	at      time.Time
}

// reconcile programs the peers of the last view: against the kernel's
// tables when full (periodic checks, repairs), else against what was last
// written (a lease event, received when its watch callback ran). The node's
// addresses and routes, which no peer may take over, are read again on the
// full path; a lease event uses the last read.
func (d *daemon) reconcile(received time.Time, full bool) {
	if full || !d.filter.knowsHost() {
		h, err := d.dp.Host()
		if err != nil && !d.filter.knowsHost() {
			d.st.reconcileError()
			d.log.Error("reading this node's addresses and routes failed; no peer is programmed before they are known, retrying at the next check", "error", err)
			return
		}
		if err != nil {
			d.log.Error("reading this node's addresses and routes failed; checking peers against the last read", "error", err)
		} else {
			d.filter.setHost(h)
		}
	}
	peers, skipped := d.filter.peers(d.entries, d.lease.Subnets)
	d.st.setSkipped(skipped)
	start := time.Now()
	program := d.dp.Update
	if full {
		program = d.dp.Reconcile
	}
	stats, err := program(peers)
	done := time.Now()
	d.st.reconciled(done.Sub(start), stats.Peers, err)
	if err != nil {
		d.log.Error("programming peers failed; retrying at the next check", "error", err)
		return
	}
	if stats.Writes() == 0 {
		return
	}
	// Logged after the writes, so that logging never delays the entries.
	if !received.IsZero() {
		d.log.Debug("peer event programmed", "received_us", received.UnixMicro(), "decoded_us", start.UnixMicro(),
			"done_us", done.UnixMicro(), "writes", stats.Writes())
	}
	d.log.Info("programmed peers", "peers", stats.Peers, "added", stats.Added, "deleted", stats.Deleted, "took", done.Sub(start))
}

// shutdown keeps the lease and the data plane, so pods keep working across
// a restart, unless --release-on-exit asks to give both up.
func (d *daemon) shutdown() error {
	if !d.cfg.ReleaseOnExit || d.lease.Subnets == (subnet.Subnets{}) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.EtcdTimeout)
	defer cancel()
	var errs []error
	if err := d.src.Release(ctx, d.lease); err != nil {
		errs = append(errs, fmt.Errorf("releasing the lease: %w", err))
	}
	errs = append(errs, d.dp.Teardown(), d.rules.Teardown(ctx))
	if err := os.Remove(d.cfg.SubnetFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	d.log.Info("released the lease and removed the data plane", "subnet", d.lease.Subnets)
	return errors.Join(errs...)
}

// slowCall runs fn, logging an error line if it has not returned after
// 800 ms, so that an unreachable store (etcd, the Kubernetes API) is
// reported within a second of start even while the call waits out its
// deadline.
func slowCall[T any](ctx context.Context, log *slog.Logger, store, what string, fn func(context.Context) (T, error)) (T, error) {
	start := time.Now()
	t := time.AfterFunc(800*time.Millisecond, func() {
		log.Error(store+" has not answered yet; still trying", "while", what, "waited", time.Since(start).Round(time.Millisecond))
	})
	defer t.Stop()
	return fn(ctx)
}
