package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/subnet"
)

// blackholes keeps, with --ip-blackhole-route, a blackhole route for each
// of the node's own subnets, as flanneld does for a pod network whose
// plugin routes each pod's address alone (Canal): traffic to an address of
// the subnet that no pod holds is dropped here instead of leaving by the
// default route. The routes are flanneld's (main table, no protocol or
// metric of their own), so that a node moving from flanneld keeps its own.
type blackholes struct {
	log     *slog.Logger
	mu      sync.Mutex
	own     []netip.Prefix
	stopped bool   // removed at shutdown: nothing is added again
	lastErr string // the failure last logged, so that it is logged once
}

// set makes the routes those of own: adds the missing ones and removes
// those of subnets no longer the node's.
func (b *blackholes) set(own subnet.Subnets) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return
	}
	want := subnetsOf(own.V4, own.V6)
	var errs []error
	for _, p := range b.own {
		if !slices.Contains(want, p) {
			errs = append(errs, removeBlackholes(p))
		}
	}
	b.own = want
	b.report(errors.Join(append(errs, b.addMissing())...))
}

// subnetsOf is the valid ones of a node's subnets, masked: subnet.env
// holds each as its first host's address.
func subnetsOf(prefixes ...netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range prefixes {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// ensure adds back what someone removed.
func (b *blackholes) ensure() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.stopped {
		b.report(b.addMissing())
	}
}

// remove takes the routes away for good (--release-on-exit).
func (b *blackholes) remove() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	return removeBlackholes(b.own...)
}

func (b *blackholes) addMissing() error {
	var errs []error
	for _, p := range b.own {
		routes, err := listBlackholes(p)
		if err == nil && len(routes) == 0 {
			err = netlink.RouteAdd(&netlink.Route{Dst: link.IPNet(p), Type: unix.RTN_BLACKHOLE, Family: family.Of(p.Addr()).Netlink()})
			if err == nil {
				b.log.Info("added a blackhole route for the node's subnet", "subnet", p)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("blackhole route for %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// report logs a failure once per change of its message: the routes are
// tried again every --iptables-resync.
func (b *blackholes) report(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != "" && msg != b.lastErr {
		b.log.Error("setting the blackhole routes of the node's subnets failed; retrying", "error", err)
	}
	b.lastErr = msg
}

// removeBlackholes deletes the blackhole routes to each prefix, and no
// other route to it: each as listed, so that its metric tells it from a
// route of the same destination (IPv6 deletes by metric, not type).
func removeBlackholes(prefixes ...netip.Prefix) error {
	var errs []error
	for _, p := range prefixes {
		routes, err := listBlackholes(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("blackhole route for %s: %w", p, err))
		}
		for _, r := range routes {
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("removing the blackhole route for %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}

func listBlackholes(p netip.Prefix) ([]netlink.Route, error) {
	return netlink.RouteListFiltered(family.Of(p.Addr()).Netlink(), &netlink.Route{Dst: link.IPNet(p), Type: unix.RTN_BLACKHOLE},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TYPE)
}

// blackholePlane is the data plane with --ip-blackhole-route's routes, set
// with the devices and removed with them.
type blackholePlane struct {
	dataPlane
	bh *blackholes
}

func (p blackholePlane) Ensure(own subnet.Subnets) (int, error) {
	mtu, err := p.dataPlane.Ensure(own)
	p.bh.set(own)
	return mtu, err
}

func (p blackholePlane) Teardown() error {
	return errors.Join(p.dataPlane.Teardown(), p.bh.remove())
}
