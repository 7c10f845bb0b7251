package subnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Check confirms that l is still this node's, renews its store lease when
// less than RenewMargin is left, and returns the lease as it now stands. It
// fails with ErrLeaseLost when the key is gone, when another node's value
// is in it, or when another run holds this NodeID (stillPresent); the
// caller acquires again.
func (m *Manager) Check(ctx context.Context, l Lease) (Lease, error) {
	if err := m.stillPresent(ctx); err != nil {
		return Lease{}, err
	}
	e, err := m.Registry.Get(ctx, l.Subnets)
	if errors.Is(err, ErrNotFound) {
		return Lease{}, fmt.Errorf("%w: key %s was deleted (expired, or removed by hand)", ErrLeaseLost, l.Subnets.Key())
	}
	if err != nil {
		return Lease{}, fmt.Errorf("reading lease %s: %w", l.Subnets.Key(), err)
	}
	if err := m.owns(e); err != nil {
		return Lease{}, err
	}
	l.Rev, l.Reserved = e.Rev, e.Lease == 0
	if l.Reserved {
		l.Expiry = time.Time{}
		return l, nil
	}
	if !l.Expiry.IsZero() && l.Expiry.Sub(m.now()) > m.RenewMargin {
		return l, nil
	}
	ttl, err := m.Registry.KeepAlive(ctx)
	if errors.Is(err, ErrLeaseGone) {
		return Lease{}, fmt.Errorf("%w: store lease of %s expired: %w", ErrLeaseLost, l.Subnets.Key(), err)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("renewing lease %s: %w", l.Subnets.Key(), err)
	}
	l.Expiry = m.now().Add(ttl)
	m.Log.Info("renewed lease", "subnet", l.Subnets, "expires", l.Expiry)
	return l, nil
}

// owns fails with ErrLeaseLost when e holds another node's value.
func (m *Manager) owns(e Entry) error {
	var a Attrs
	if err := json.Unmarshal(e.Value, &a); err != nil {
		return fmt.Errorf("%w: key %s now holds a value that is not a lease: %w", ErrLeaseLost, e.Subnets.Key(), err)
	}
	if a.NodeID != m.Node.NodeID {
		return fmt.Errorf("%w: key %s was taken over (node %q, public IP %s): %w", ErrLeaseLost, e.Subnets.Key(), a.NodeID, a.PublicIP, ErrWrongOwner)
	}
	return nil
}

// Owns reports whether e is the key of l and still holds this node's value,
// for callers that follow the leases through Watch.
func (m *Manager) Owns(l Lease, e Entry) bool {
	return e.Subnets == l.Subnets && m.owns(e) == nil
}

// Release gives the lease up: the key is deleted (a reservation is kept, as
// an operator made it), the store lease revoked and the NodeID's presence
// record with it. A run that no longer holds its NodeID leaves all three
// to the run that does, which may have taken the lease over.
func (m *Manager) Release(ctx context.Context, l Lease) error {
	if !m.holds {
		return fmt.Errorf("lease %s left as it is: another run holds node identity %q now: %w", l.Subnets.Key(), m.Node.NodeID, ErrIdentityInUse)
	}
	var errs []error
	if !l.Reserved {
		if err := m.Registry.Delete(ctx, l.Subnets, l.Rev); err != nil && !errors.Is(err, ErrConflict) {
			errs = append(errs, fmt.Errorf("deleting lease %s: %w", l.Subnets.Key(), err))
		}
	}
	if err := m.Registry.Revoke(ctx); err != nil {
		errs = append(errs, fmt.Errorf("revoking the store lease: %w", err))
	}
	if err := m.Registry.ReleasePresence(ctx); err != nil {
		errs = append(errs, fmt.Errorf("releasing the presence record: %w", err))
	}
	m.holds = false
	return errors.Join(errs...)
}
