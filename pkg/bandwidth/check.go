package bandwidth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
)

// redo ends every CHECK failure: what to do about it.
const redo = "; DEL and ADD the attachment again"

// check verifies that l's root qdisc shapes as s says. A tbf may also
// carry what the reference computes for the same limits.
func (s shaper) check(l netlink.Link) error {
	name := l.Attrs().Name
	qdiscs, err := link.RetryDump(func() ([]netlink.Qdisc, error) { return netlink.QdiscList(l) })
	if err != nil {
		return fmt.Errorf("listing the qdiscs of %s: %w", name, err)
	}
	i := slices.IndexFunc(qdiscs, func(q netlink.Qdisc) bool { return q.Attrs().Parent == netlink.HANDLE_ROOT })
	if i < 0 {
		return fmt.Errorf("%s has no root qdisc: it is not shaped"+redo, name)
	}
	switch q := qdiscs[i].(type) {
	case *netlink.Tbf:
		if s.scope == shapeAll && (tbfIs(q, s.bucket) || tbfIs(q, s.reference)) {
			return nil
		}
		return fmt.Errorf("%s is shaped by a tbf of rate %d B/s, limit %d B, buffer %d ticks; the configuration asks for %s"+redo,
			name, q.Rate, q.Limit, q.Buffer, s)
	case *netlink.Htb:
		if s.scope != shapeAll {
			return s.checkHTB(l, q)
		}
	}
	return fmt.Errorf("the root qdisc of %s is %s; the configuration asks for %s"+redo, name, qdiscs[i].Type(), s)
}

func tbfIs(q *netlink.Tbf, b bucket) bool {
	return q.Rate == b.rate && q.Limit == b.limit && q.Buffer == b.buffer
}

// String says what s installs, for messages.
func (s shaper) String() string {
	kind := "a tbf"
	switch s.scope {
	case shapeListed:
		kind = fmt.Sprintf("an htb shaping only %v", s.subnets)
	case shapeAllButListed:
		kind = fmt.Sprintf("an htb shaping all but %v", s.subnets)
	}
	return fmt.Sprintf("%s of rate %d B/s, limit %d B, buffer %d ticks", kind, s.bucket.rate, s.bucket.limit, s.bucket.buffer)
}

// checkHTB compares the default class, both classes and the filters.
func (s shaper) checkHTB(l netlink.Link, q *netlink.Htb) error {
	name := l.Attrs().Name
	if q.Defcls != s.defaultClass()&0xffff {
		return fmt.Errorf("the htb of %s sends unmatched traffic to class 1:%x; the configuration asks for %s"+redo, name, q.Defcls, s)
	}
	classes, err := link.RetryDump(func() ([]netlink.Class, error) { return netlink.ClassList(l, rootHandle) })
	if err != nil {
		return fmt.Errorf("listing the classes of %s: %w", name, err)
	}
	for _, want := range s.classes(l.Attrs().Index) {
		if !slices.ContainsFunc(classes, func(c netlink.Class) bool { return classIs(c, want) }) {
			return fmt.Errorf("%s has no htb class %s of rate %d B/s, buffer %d ticks; the configuration asks for %s"+redo,
				name, netlink.HandleStr(want.Handle), want.Rate, want.Buffer, s)
		}
	}
	filters, err := link.RetryDump(func() ([]netlink.Filter, error) { return netlink.FilterList(l, rootHandle) })
	if err != nil {
		return fmt.Errorf("listing the filters of %s: %w", name, err)
	}
	var got, want []string
	for _, f := range filters {
		if u, ok := f.(*netlink.U32); ok && u.ClassId != 0 { // the others are u32's hash tables
			got = append(got, filterKey(u))
		}
	}
	for _, u := range s.filters(l.Attrs().Index) {
		want = append(want, filterKey(u))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("the filters of %s are %q; the configuration asks for %q"+redo, name, got, want)
	}
	return nil
}

func classIs(c netlink.Class, want *netlink.HtbClass) bool {
	h, ok := c.(*netlink.HtbClass)
	return ok && h.Handle == want.Handle && h.Rate == want.Rate && h.Ceil == want.Ceil &&
		h.Buffer == want.Buffer && h.Cbuffer == want.Cbuffer
}

// filterKey is what a subnet's filter matches, as tc shows it, and where
// it sends it; keys that match anything (a /0 has one) do not count.
func filterKey(u *netlink.U32) string {
	var b strings.Builder
	fmt.Fprintf(&b, "protocol %#04x prio %d flowid %s", u.Protocol, u.Priority, netlink.HandleStr(u.ClassId))
	if u.Sel != nil {
		for _, k := range u.Sel.Keys {
			if k.Mask != 0 {
				fmt.Fprintf(&b, " match %08x/%08x at %d", k.Val, k.Mask, k.Off)
			}
		}
	}
	return b.String()
}

// checkRedirect verifies that the pod's traffic reaches the ifb: an ingress
// qdisc on the node side of its veth with a mirred redirect to the ifb.
func checkRedirect(host netlink.Link, ifbIndex int) error {
	name := host.Attrs().Name
	filters, err := link.RetryDump(func() ([]netlink.Filter, error) { return netlink.FilterList(host, ingressHandle) })
	if err != nil {
		return fmt.Errorf("listing the ingress filters of %s (no ingress qdisc: the pod's traffic is not shaped%s): %w", name, redo, err)
	}
	for _, f := range filters {
		u, ok := f.(*netlink.U32)
		if !ok {
			continue
		}
		for _, a := range u.Actions {
			if m, ok := a.(*netlink.MirredAction); ok && m.MirredAction == netlink.TCA_EGRESS_REDIR && m.Ifindex == ifbIndex {
				return nil
			}
		}
	}
	return fmt.Errorf("no ingress filter of %s redirects the pod's traffic to its ifb (index %d)"+redo, name, ifbIndex)
}
