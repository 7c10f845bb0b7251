package subnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// PresenceTTL is how long a node identity's presence record outlives the
// subnetd that holds it: the registry renews it every third of that while
// the subnetd runs. It bounds how long a node rebooted after a crash waits
// for the record of its previous boot, and how soon a node whose identity
// was held proceeds once the holder is gone.
const PresenceTTL = 15 * time.Second

// ErrIdentityInUse marks a node whose identity (NodeID) another live subnetd
// holds: two machines share it (cloned from one image with its
// /etc/machine-id, or given one --node-id) and would serve one subnet. It is
// a state to wait in, as the holder may go away; the node takes no lease
// meanwhile.
var ErrIdentityInUse = errors.New("node identity held by another live subnetd")

// Instance tells apart the subnetds that run under one NodeID: two differ
// in Token (kept in the data directory, so the same across restarts and
// reboots) or in Boot (the kernel's boot ID, so that a data directory
// copied to another machine, or the previous boot's record, is not taken
// for this run's).
type Instance struct {
	Token string
	Boot  string
}

func (i Instance) owner() string { return i.Token + "\x00" + i.Boot }

// Presence is the value of a node identity's presence record: who holds the
// identity now, for messages and to recognise a run's own record.
type Presence struct {
	PublicIP   netip.Addr `json:",omitzero"`
	PublicIPv6 netip.Addr `json:",omitzero"`
	Instance   string
	Boot       string
}

// ParsePresence reads a presence record's value; one over MaxValueSize is
// refused undecoded.
func ParsePresence(b []byte) (Presence, error) {
	if len(b) > MaxValueSize {
		return Presence{}, fmt.Errorf("presence record of %d bytes: %w", len(b), ErrValueTooLarge)
	}
	var p Presence
	if err := json.Unmarshal(b, &p); err != nil {
		return Presence{}, fmt.Errorf("presence record: %w", err)
	}
	return p, nil
}

// Addrs is the holder's public addresses, for messages.
func (p Presence) Addrs() string {
	var a []string
	for _, ip := range []netip.Addr{p.PublicIP, p.PublicIPv6} {
		if ip.IsValid() && !ip.IsUnspecified() {
			a = append(a, ip.String())
		}
	}
	if len(a) == 0 {
		return "an unknown address"
	}
	return strings.Join(a, " and ")
}

// IdentityInUseError is ErrIdentityInUse with the holder and the fix.
type IdentityInUseError struct {
	NodeID string
	Holder Presence
	// SameToken: the holder has this node's data directory token, so it is
	// this node before a reboot or a machine cloned with its data directory.
	SameToken bool
	Hint      string // how to give this node an identity of its own
}

func (e *IdentityInUseError) Error() string {
	who := "another live subnetd"
	if e.SameToken {
		who = "a subnetd of another boot with this data directory (this node before a reboot, whose record expires within " +
			PresenceTTL.String() + ", or a machine cloned with this data directory)"
	}
	msg := fmt.Sprintf("node identity %q is held by %s at public IP %s: two nodes under one identity would serve one subnet, so this node takes no lease and waits, not ready, until that one has been gone for %v",
		e.NodeID, who, e.Holder.Addrs(), PresenceTTL)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

func (e *IdentityInUseError) Unwrap() error { return ErrIdentityInUse }

// presence is this run's record value.
func (m *Manager) presence() Presence {
	return Presence{PublicIP: m.Node.PublicIP, PublicIPv6: m.Node.PublicIPv6, Instance: m.Instance.Token, Boot: m.Instance.Boot}
}

// claim makes this run the live holder of its NodeID: it writes the
// presence record when there is none, or when the record is this run's own
// (a restart: same token and boot), else fails with IdentityInUseError.
// Every write is a compare-and-swap, so of two runs claiming at once one
// wins. A record that does not decode is taken over.
func (m *Manager) claim(ctx context.Context) error {
	value, err := json.Marshal(m.presence())
	if err != nil {
		return fmt.Errorf("encoding the presence record: %w", err)
	}
	for round := 0; round < maxRounds; round++ {
		rec, err := m.Registry.Presence(ctx, m.Node.NodeID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("reading the presence record of node %q: %w", m.Node.NodeID, err)
		}
		if err == nil {
			if err := m.inUse(rec); err != nil {
				m.holds = false
				return err
			}
		}
		_, err = m.Registry.ClaimPresence(ctx, m.Node.NodeID, m.Instance.owner(), value, rec.Rev)
		if errors.Is(err, ErrConflict) {
			continue // written meanwhile: read who holds it now
		}
		if err != nil {
			return fmt.Errorf("claiming node identity %q: %w", m.Node.NodeID, err)
		}
		m.holds = true
		return nil
	}
	return fmt.Errorf("claiming node identity %q: gave up after %d lost races: %w", m.Node.NodeID, maxRounds, ErrConflict)
}

// inUse returns IdentityInUseError when rec is another run's.
func (m *Manager) inUse(rec Record) error {
	p, err := ParsePresence(rec.Value)
	if err != nil || (p.Instance == m.Instance.Token && p.Boot == m.Instance.Boot) {
		return nil
	}
	return &IdentityInUseError{NodeID: m.Node.NodeID, Holder: p, SameToken: p.Instance == m.Instance.Token, Hint: m.IdentityHint}
}

// stillPresent confirms that this run holds its NodeID, claiming it again
// when the record expired meanwhile (the store was out of reach for longer
// than PresenceTTL and nobody else took it). Held by another run, the
// lease is lost: that run may have taken it over.
func (m *Manager) stillPresent(ctx context.Context) error {
	rec, err := m.Registry.Presence(ctx, m.Node.NodeID)
	switch {
	case errors.Is(err, ErrNotFound):
		m.Log.Warn("this node's presence record expired; claiming it again", "node", m.Node.NodeID)
		err = m.claim(ctx)
	case err != nil:
		return fmt.Errorf("reading the presence record of node %q: %w", m.Node.NodeID, err)
	default:
		err = m.inUse(rec)
	}
	if errors.Is(err, ErrIdentityInUse) {
		m.holds = false
		return fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	return err
}
