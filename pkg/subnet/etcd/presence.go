package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The presence records live under <prefix>/subnetd/nodes/<node ID>, beside
// flanneld's <prefix>/subnets/ and outside what it lists and watches.
func (r *Registry) presenceKey(node string) string { return r.prefix + "/subnetd/nodes/" + node }

// Presence returns node's presence record, or subnet.ErrNotFound.
func (r *Registry) Presence(ctx context.Context, node string) (subnet.Record, error) {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	k := r.presenceKey(node)
	resp, err := r.cli.Get(ctx, k)
	if err != nil {
		return subnet.Record{}, r.wrap("reading "+k, err)
	}
	if len(resp.Kvs) == 0 {
		return subnet.Record{}, fmt.Errorf("%s: %w", k, subnet.ErrNotFound)
	}
	return subnet.Record{Value: resp.Kvs[0].Value, Rev: resp.Kvs[0].ModRevision}, nil
}

// ClaimPresence writes node's record with a compare-and-swap, on the etcd
// lease of owner (PresenceLeaseID), which it grants or, left by a previous
// run of the same owner, takes over; from then on keepPresence renews it.
// A lost swap revokes a lease it granted, which would hold nothing.
func (r *Registry) ClaimPresence(ctx context.Context, node, owner string, value []byte, prevRev int64) (subnet.Record, error) {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	id := PresenceLeaseID(r.prefix, node, owner)
	if err := r.grantID(ctx, id, r.presenceTTL); err != nil {
		return subnet.Record{}, r.wrap(fmt.Sprintf("granting etcd lease %x", int64(id)), err)
	}
	k := r.presenceKey(node)
	cmp := clientv3.Compare(clientv3.ModRevision(k), "=", prevRev)
	if prevRev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
	}
	resp, err := r.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(k, string(value), clientv3.WithLease(id))).Commit()
	if err == nil && !resp.Succeeded {
		_, _ = r.cli.Revoke(ctx, id) // the record is not on it: another run's, or gone
		r.forgetPresence(id)
		return subnet.Record{}, fmt.Errorf("%s: %w", k, subnet.ErrConflict)
	}
	if err != nil {
		return subnet.Record{}, r.wrap("writing "+k, err)
	}
	r.mu.Lock()
	r.presence = id
	r.mu.Unlock()
	r.keeping.Do(func() { go r.keepPresence() })
	return subnet.Record{Value: value, Rev: resp.Header.Revision}, nil
}

// PresenceLeaseID is the etcd lease ID of owner's presence record of node
// under prefix: the same for a restart of one run, which so takes its
// previous run's lease over instead of leaving it for its TTL.
func PresenceLeaseID(prefix, node, owner string) clientv3.LeaseID {
	return LeaseIDFor(prefix, "presence\x00"+node+"\x00"+owner)
}

// grantID grants lease id of ttl, or renews it when etcd still has it.
func (r *Registry) grantID(ctx context.Context, id clientv3.LeaseID, ttl time.Duration) error {
	_, err := clientv3.RetryLeaseClient(r.cli).LeaseGrant(ctx, &etcdserverpb.LeaseGrantRequest{TTL: int64(ttl / time.Second), ID: int64(id)})
	if errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseExist) {
		_, err = r.cli.KeepAliveOnce(ctx, id)
	}
	return rpctypes.Error(err)
}

// keepPresence renews the presence lease every third of its TTL until the
// registry is closed; a lease etcd no longer has is forgotten (the record
// went with it; the Manager's next check claims it again).
func (r *Registry) keepPresence() {
	t := time.NewTicker(r.presenceTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-r.closed:
			return
		case <-t.C:
		}
		r.mu.Lock()
		id := r.presence
		r.mu.Unlock()
		if id == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(r.timeout, r.presenceTTL/3))
		_, err := r.cli.KeepAliveOnce(ctx, id)
		cancel()
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			r.forgetPresence(id)
		}
	}
}

func (r *Registry) forgetPresence(id clientv3.LeaseID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.presence == id {
		r.presence = 0
	}
}

// ReleasePresence revokes the presence lease; etcd deletes the record.
func (r *Registry) ReleasePresence(ctx context.Context) error { return r.revoke(ctx, &r.presence) }
