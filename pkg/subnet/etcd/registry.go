package etcd

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config returns the network config's JSON, or subnet.ErrNotFound.
func (r *Registry) Config(ctx context.Context) ([]byte, error) {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.configKey())
	if err != nil {
		return nil, r.wrap("reading "+r.configKey(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s: %w", r.configKey(), subnet.ErrNotFound)
	}
	return resp.Kvs[0].Value, nil
}

// CreateConfig stores the network config unless one is there.
func (r *Registry) CreateConfig(ctx context.Context, data []byte) error {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	k := r.configKey()
	resp, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, string(data))).Commit()
	if err != nil {
		return r.wrap("creating "+k, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", k, subnet.ErrConflict)
	}
	return nil
}

// List returns the lease keys; keys that are not subnets are skipped.
func (r *Registry) List(ctx context.Context) ([]subnet.Entry, int64, error) {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.subnetsDir(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, r.wrap("listing "+r.subnetsDir(), err)
	}
	out := make([]subnet.Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if e, ok := r.entry(kv); ok {
			out = append(out, e)
		}
	}
	return out, resp.Header.Revision, nil
}

func (r *Registry) entry(kv *mvccpb.KeyValue) (subnet.Entry, bool) {
	s, err := subnet.ParseKey(strings.TrimPrefix(string(kv.Key), r.subnetsDir()))
	if err != nil {
		return subnet.Entry{}, false
	}
	return subnet.Entry{Subnets: s, Value: kv.Value, Rev: kv.ModRevision, Lease: kv.Lease}, true
}

// Get returns one lease key, or subnet.ErrNotFound.
func (r *Registry) Get(ctx context.Context, s subnet.Subnets) (subnet.Entry, error) {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.key(s))
	if err != nil {
		return subnet.Entry{}, r.wrap("reading "+r.key(s), err)
	}
	if len(resp.Kvs) == 0 {
		return subnet.Entry{}, fmt.Errorf("%s: %w", r.key(s), subnet.ErrNotFound)
	}
	e, _ := r.entry(resp.Kvs[0])
	return e, nil
}

// Put writes a lease with a compare-and-swap on the key's revision. A leased
// write whose etcd lease has expired meanwhile is retried once on a new one.
func (r *Registry) Put(ctx context.Context, s subnet.Subnets, value []byte, prevRev int64, leased bool) (subnet.Entry, error) {
	for attempt := 0; ; attempt++ {
		e, err := r.put(ctx, s, value, prevRev, leased)
		if attempt == 0 && errors.Is(err, subnet.ErrLeaseGone) {
			continue
		}
		return e, err
	}
}

func (r *Registry) put(ctx context.Context, s subnet.Subnets, value []byte, prevRev int64, leased bool) (subnet.Entry, error) {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	var opts []clientv3.OpOption
	var lease clientv3.LeaseID
	if leased {
		var err error
		if lease, err = r.heldLease(ctx); err != nil {
			return subnet.Entry{}, err
		}
		opts = append(opts, clientv3.WithLease(lease))
	}
	k := r.key(s)
	cmp := clientv3.Compare(clientv3.ModRevision(k), "=", prevRev)
	if prevRev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
	}
	resp, err := r.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(k, string(value), opts...)).Commit()
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		r.forget(lease)
	}
	if err != nil {
		return subnet.Entry{}, r.wrap("writing "+k, err)
	}
	if !resp.Succeeded {
		return subnet.Entry{}, fmt.Errorf("%s: %w", k, subnet.ErrConflict)
	}
	return subnet.Entry{Subnets: s, Value: value, Rev: resp.Header.Revision, Lease: int64(lease)}, nil
}

// heldLease returns the client's etcd lease, granting it on first use.
func (r *Registry) heldLease(ctx context.Context) (clientv3.LeaseID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lease != 0 {
		return r.lease, nil
	}
	if r.leaseID != 0 {
		return r.grantOwned(ctx)
	}
	resp, err := r.cli.Grant(ctx, int64(r.ttl/time.Second))
	if err != nil {
		return 0, r.wrap("granting an etcd lease", err)
	}
	r.lease = resp.ID
	return r.lease, nil
}

// grantOwned grants the lease under the owner's ID, or takes over the one
// etcd still has under it: no key of this node hangs on it (a key found
// by Acquire is adopted with its lease before any grant), so it is what a
// run killed between its grant and its write left. Called with mu held.
func (r *Registry) grantOwned(ctx context.Context) (clientv3.LeaseID, error) {
	if err := r.grantID(ctx, r.leaseID, r.ttl); err != nil {
		return 0, r.wrap(fmt.Sprintf("granting etcd lease %x", int64(r.leaseID)), err)
	}
	r.lease = r.leaseID
	return r.lease, nil
}

// LeaseIDFor is the etcd lease ID of owner's leases under prefix: a hash,
// positive (etcd reads 0 as "pick one"), so that nodes' IDs do not meet.
func LeaseIDFor(prefix, owner string) clientv3.LeaseID {
	h := fnv.New64a()
	h.Write([]byte(prefix + "\x00" + owner))
	if id := clientv3.LeaseID(h.Sum64() >> 1); id != 0 {
		return id
	}
	return 1
}

// forget drops a lease etcd no longer has, so that the next write grants one.
func (r *Registry) forget(id clientv3.LeaseID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lease == id {
		r.lease = 0
	}
}

// Delete removes a lease key if its revision is still prevRev.
func (r *Registry) Delete(ctx context.Context, s subnet.Subnets, prevRev int64) error {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	k := r.key(s)
	resp, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", prevRev)).Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return r.wrap("deleting "+k, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s: %w", k, subnet.ErrConflict)
	}
	return nil
}

// Adopt takes over the etcd lease of this node's previous run if it lives.
func (r *Registry) Adopt(ctx context.Context, id int64) error {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	if _, err := r.cli.KeepAliveOnce(ctx, clientv3.LeaseID(id)); err != nil {
		return r.wrap(fmt.Sprintf("renewing etcd lease %x", id), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lease != 0 && r.lease != clientv3.LeaseID(id) {
		// A lease granted earlier in this run may hold nothing; revoke it
		// rather than leave it to its TTL.
		_, _ = r.cli.Revoke(ctx, r.lease)
	}
	r.lease = clientv3.LeaseID(id)
	return nil
}

// KeepAlive renews the held etcd lease once and returns its time to live.
func (r *Registry) KeepAlive(ctx context.Context) (time.Duration, error) {
	r.mu.Lock()
	id := r.lease
	r.mu.Unlock()
	if id == 0 {
		return 0, fmt.Errorf("no etcd lease held: %w", subnet.ErrLeaseGone)
	}
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	resp, err := r.cli.KeepAliveOnce(ctx, id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		r.forget(id)
	}
	if err != nil {
		return 0, r.wrap(fmt.Sprintf("renewing etcd lease %x", int64(id)), err)
	}
	return time.Duration(resp.TTL) * time.Second, nil
}

// Revoke ends the held etcd lease; etcd deletes the keys on it.
func (r *Registry) Revoke(ctx context.Context) error { return r.revoke(ctx, &r.lease) }

// revoke ends the etcd lease *held (mu guards it) and forgets it; a lease
// etcd no longer has is no error.
func (r *Registry) revoke(ctx context.Context, held *clientv3.LeaseID) error {
	r.mu.Lock()
	id := *held
	*held = 0
	r.mu.Unlock()
	if id == 0 {
		return nil
	}
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	if _, err := r.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return r.wrap(fmt.Sprintf("revoking etcd lease %x", int64(id)), err)
	}
	return nil
}

// Watch streams lease changes from rev on. It requires a leader, so that a
// member cut off from its cluster ends the watch instead of going silent.
func (r *Registry) Watch(ctx context.Context, rev int64) <-chan subnet.Event {
	out := make(chan subnet.Event)
	go func() {
		defer close(out)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		for resp := range r.cli.Watch(wctx, r.subnetsDir(), clientv3.WithPrefix(), clientv3.WithRev(rev)) {
			if err := resp.Err(); err != nil {
				if resp.CompactRevision != 0 {
					err = fmt.Errorf("revision %d, compacted up to %d: %w", rev, resp.CompactRevision, subnet.ErrCompacted)
				}
				send(ctx, out, subnet.Event{Err: err})
				return
			}
			for _, ev := range resp.Events {
				e, ok := r.entry(ev.Kv)
				if !ok {
					continue
				}
				if !send(ctx, out, subnet.Event{Entry: e, Deleted: ev.Type == mvccpb.DELETE}) {
					return
				}
			}
		}
	}()
	return out
}

func send(ctx context.Context, out chan<- subnet.Event, ev subnet.Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}
