package etcd

import (
	"context"
	"fmt"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TimeToLive reports what is left of etcd lease id and the TTL it was granted
// (a keep-alive renews it to that), for tools that show when leases expire.
// A lease etcd no longer has gives subnet.ErrLeaseGone.
func (r *Registry) TimeToLive(ctx context.Context, id int64) (left, granted time.Duration, err error) {
	ctx, cancel := r.deadline(ctx)
	defer cancel()
	resp, err := r.cli.TimeToLive(ctx, clientv3.LeaseID(id))
	if err != nil {
		return 0, 0, r.wrap(fmt.Sprintf("reading etcd lease %x", id), err)
	}
	if resp.TTL < 0 {
		return 0, 0, fmt.Errorf("etcd lease %x: %w", id, subnet.ErrLeaseGone)
	}
	return time.Duration(resp.TTL) * time.Second, time.Duration(resp.GrantedTTL) * time.Second, nil
}
