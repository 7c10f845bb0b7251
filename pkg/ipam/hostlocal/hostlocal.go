// Package hostlocal is the host-local IPAM plugin: it hands out addresses
// from configured ranges and keeps reservations in files on the node, in the
// layout of the reference plugin. The host-local binary runs it, and bridge,
// macvlan and flannel link it in to run IPAM of type host-local without an
// exec.
//
// It must not import another plugin's package or pkg/link: it reserves
// addresses and never configures a link.
package hostlocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/ipam/stale"
	"github.com/cnisuite/cni/pkg/netconf"
)

// Plugin is host-local's verbs.
type Plugin struct{}

func owner(a *cniplugin.Args) ipam.Owner {
	return ipam.Owner{ContainerID: a.ContainerID, IfName: a.IfName}
}

// Add reserves one address per range set, all under one lock so that
// concurrent ADDs never see each other half done. On failure every address
// reserved by this call is released again.
func (Plugin) Add(_ context.Context, a *cniplugin.Args) (_ types.Result, retErr error) {
	if err := disk.CheckOwner(owner(a)); err != nil {
		return nil, netconf.Errorf(netconf.CodeInvalidEnv, "CNI_CONTAINERID is %d bytes long: %w; use a shorter container ID", len(a.ContainerID), err)
	}
	// The record is written and synced while the configuration is read
	// (~0.2 ms cold) and the store opened.
	dataDir, network := storeOf(a.StdinData)
	early := disk.BeginReserve(dataDir, network, owner(a))
	defer early.Discard()
	c, err := loadConfig(a.StdinData, a.Args)
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if c.resolvConf != "" {
		if res.DNS, err = readResolvConf(c.resolvConf); err != nil {
			return nil, err
		}
	}
	requested, err := c.requestedPerSet()
	if err != nil {
		return nil, err
	}
	s, err := disk.OpenToReserve(c.dataDir, c.name, a.Logger(), owner(a), len(c.sets), early)
	if err != nil {
		return nil, err
	}
	defer s.Close()

	log := a.Logger()
	var undo cniplugin.Undo
	defer undo.OnError(&retErr, log)
	// What proves later that this attachment is gone: its namespace.
	claim := ipam.Claim{Owner: owner(a), Netns: stale.Identify(a.Netns)}
	mayReclaim := c.reclaimStale // once per ADD: one pass frees every set
	for i, set := range c.sets {
		al := ipam.Allocator{Set: set, Index: i, Store: s}
		got, err := al.Allocate(claim, requested[i])
		if errors.Is(err, ipam.ErrExhausted) && mayReclaim {
			mayReclaim = false
			if n := reclaimGone(s, log); n > 0 {
				got, err = al.Allocate(claim, requested[i])
			}
		}
		if errors.Is(err, ipam.ErrExhausted) {
			// Not code 11: the pool does not refill by itself; someone has to
			// release reservations or widen the range.
			return nil, fmt.Errorf("no IP addresses available in network: %s: %w; %s", c.name, err, exhaustedHint(c, s))
		}
		if err != nil {
			return nil, fmt.Errorf("allocating from range set %d: %w", i, err)
		}
		addr := got.Address.Addr()
		undo.Push("release "+addr.String(), func() error { return s.Release(addr) })
		log.Info("reserved", "addr", got.Address, "set", i)
		res.IPs = append(res.IPs, &current.IPConfig{Address: ipam.IPNet(got.Address), Gateway: ipam.IP(got.Gateway)})
	}
	res.Routes = c.routes
	return res, nil
}

// exhaustedHint says what frees addresses, and how to see who holds them.
func exhaustedHint(c *config, s *disk.Store) string {
	return fmt.Sprintf("%s; `cnictl ipam ls %s` shows who holds them (records in %s); the runtime's DEL or CNI GC frees those of containers that are gone; if all are in use, widen the range or add one to the set", reclaimNote(c), c.name, s.Dir())
}

// reclaimNote says why a full range stays full.
func reclaimNote(c *config) string {
	if !c.reclaimStale {
		return "reclaiming reservations of gone namespaces is off (reclaimStale: false)"
	}
	return "no reservation's owner could be proved gone"
}

// reclaimGone frees the reservations whose owner is provably gone (see
// pkg/ipam/stale), logging each, and returns how many it freed. It is best
// effort: what cannot be looked at is kept.
func reclaimGone(s ipam.Store, log *slog.Logger) int {
	vs, err := stale.Survey(s, &stale.Prober{})
	if err != nil {
		log.Warn("some reservations could not be read while looking for gone owners", "err", err)
	}
	done, err := stale.Reclaim(s, vs)
	for _, v := range done {
		log.Warn("reclaimed the address of an attachment that is gone", "addr", v.Addr, "owner", v.Owner.String(), "reason", v.Reason)
	}
	if err != nil {
		log.Warn("releasing the reservations of gone owners", "err", err)
	}
	return len(done)
}

// ipNet converts at the CNI edge; the address keeps its host bits.
// Del releases the attachment's addresses. Nothing to release is success.
// Only the name and dataDir are needed, so a configuration whose ranges were
// since made invalid still releases what it reserved.
func (Plugin) Del(_ context.Context, a *cniplugin.Args) error {
	n, err := decode(a.StdinData)
	if err != nil {
		return err
	}
	s, err := disk.OpenLogged(n.IPAM.DataDir, n.Name, a.Logger())
	if err != nil {
		return err
	}
	defer s.Close()
	released, err := s.ReleaseByOwner(owner(a))
	a.Logger().Info("released", "addrs", released)
	if err != nil {
		return fmt.Errorf("releasing the addresses of %s: %w", owner(a), err)
	}
	return nil
}

// Check verifies that every address of the prevResult is reserved for this
// attachment. Without a prevResult it does what the reference does: checks
// that the attachment holds some address.
func (Plugin) Check(_ context.Context, a *cniplugin.Args) error {
	c, err := loadConfig(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	prev, err := c.base.PrevResult()
	if err != nil {
		return err
	}
	s, err := disk.OpenLogged(c.dataDir, c.name, a.Logger())
	if err != nil {
		return err
	}
	defer s.Close()
	if prev == nil {
		held, err := s.ByOwner(owner(a))
		if err == nil && len(held) == 0 {
			err = fmt.Errorf("no address is reserved for %s in %s; run DEL and ADD again", owner(a), s.Dir())
		}
		return err
	}
	var errs []error
	for _, ipc := range prev.IPs {
		errs = append(errs, checkReserved(s, ipc.Address.IP, owner(a)))
	}
	return errors.Join(errs...)
}

func checkReserved(s *disk.Store, ip net.IP, o ipam.Owner) error {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return fmt.Errorf("prevResult address %v is not an IP address", ip)
	}
	addr = addr.Unmap()
	res, found, err := s.Lookup(addr)
	switch {
	case err != nil:
		return err
	case !found:
		return fmt.Errorf("address %s of %s is not reserved in %s: its record was lost; run DEL and ADD again for the attachment", addr, o, s.Dir())
	case res.Corrupt != nil:
		return fmt.Errorf("address %s of %s has an unreadable record in %s: %w; run DEL and ADD again for the attachment", addr, o, s.Dir(), res.Corrupt)
	case !res.Owner.Matches(o):
		return fmt.Errorf("address %s is reserved for %s, not for %s: two attachments claim it; DEL and ADD one of them again", addr, res.Owner, o)
	}
	return nil
}

// GC releases every reservation not held by an attachment of the valid list
// (none listed: release all), and every record that names no owner. Errors
// on single records are collected so that one bad file does not stop the rest.
// The index is rebuilt first, so that nothing of it outlives its records.
func (Plugin) GC(_ context.Context, a *cniplugin.Args) error {
	n, err := decode(a.StdinData)
	if err != nil {
		return err
	}
	s, err := disk.OpenLogged(n.IPAM.DataDir, n.Name, a.Logger())
	if err != nil {
		return err
	}
	defer s.Close()
	valid := n.ValidList()
	errs := []error{s.Rebuild()}
	all, err := s.All()
	errs = append(errs, err)
	for _, r := range all {
		if r.Corrupt == nil && held(r.Owner, valid) {
			continue
		}
		if errors.Is(r.Corrupt, disk.ErrNotRecord) { // not ours to remove
			a.Logger().Warn("an entry that is not a reservation record blocks an address", "addr", r.Addr, "reason", r.Corrupt)
			continue
		}
		if err := s.Release(r.Addr); err != nil {
			errs = append(errs, err)
			continue
		}
		a.Logger().Info("garbage-collected", "addr", r.Addr, "owner", r.Owner.String(), "corrupt", r.Corrupt)
	}
	errs = append(errs, s.RemoveStale())
	return errors.Join(errs...)
}

func held(o ipam.Owner, valid []netconf.Attachment) bool {
	for _, v := range valid {
		if o.Matches(ipam.Owner{ContainerID: v.ContainerID, IfName: v.IfName}) {
			return true
		}
	}
	return false
}

// Status reports whether ADD can succeed: 50 when the data directory cannot
// be used, 51 when some range set has no free address left (ADD needs one
// address from every set) and, with reclaimStale, none held by an owner
// provably gone (ADD would reclaim it: saying "full" then would keep the
// runtime from ever sending the ADD that frees it).
func (Plugin) Status(_ context.Context, a *cniplugin.Args) error {
	c, err := loadConfig(a.StdinData, a.Args)
	if err != nil {
		return err
	}
	s, err := disk.OpenLogged(c.dataDir, c.name, a.Logger())
	if err != nil {
		return unavailable(err)
	}
	defer s.Close()
	if err := unix.Access(s.Dir(), unix.W_OK); err != nil {
		return unavailable(fmt.Errorf("%s is not writable: %w", s.Dir(), err))
	}
	all, err := s.All()
	if err != nil {
		return unavailable(err)
	}
	var gone []stale.Verdict
	for i, set := range c.sets {
		if !set.Full(all) {
			continue
		}
		if c.reclaimStale && gone == nil {
			gone = goneOnly(stale.Survey(s, &stale.Prober{}))
		}
		if !slices.ContainsFunc(gone, func(v stale.Verdict) bool { _, ok := set.RangeFor(v.Addr); return ok }) {
			return netconf.Errorf(netconf.CodeExhausted, "no IP addresses available in network: %s: every address of range set %d (%s) is reserved and %s; reservations of containers that are gone are freed by DEL or the runtime's CNI GC (`cnictl ipam ls %s` shows who holds them; records in %s), otherwise widen the range", c.name, i, set, reclaimNote(c), c.name, s.Dir())
		}
	}
	return nil
}

// goneOnly keeps the verdicts of gone owners; never nil, so that the survey
// runs once. Unreadable records are not gone.
func goneOnly(vs []stale.Verdict, _ error) []stale.Verdict {
	out := []stale.Verdict{}
	for _, v := range vs {
		if v.State == stale.Gone {
			out = append(out, v)
		}
	}
	return out
}

func unavailable(err error) error {
	return netconf.Errorf(netconf.CodeUnavailable, "host-local cannot keep reservations: %w; make the dataDir exist and be writable by the runtime", err)
}
