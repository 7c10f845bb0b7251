package sbr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
)

// firstTable is where the search for a free table starts, as in the reference.
const firstTable = 100

// add runs in the pod. With "table", a rule per address to it; else, per
// address, the first table from 100 that no rule names and no route is
// in, a rule to it, the gateway's default route and the interface's routes
// of the address's family that belong to it (its source or gateway in the
// address's subnet, or neither set), and once every table is filled those
// routes leave the main table. A failure takes back what was done.
func add(a *cniplugin.Args, c *NetConf, ips []*current.IPConfig) (retErr error) {
	var undo cniplugin.Undo
	defer undo.OnError(&retErr, a.Logger())
	if c.Table != nil {
		for _, ipc := range ips {
			if err := addRule(&undo, ipc, *c.Table); err != nil {
				return err
			}
		}
		return nil
	}
	l, err := netlink.LinkByName(a.IfName)
	if link.IsNotFound(err) {
		return netconf.Errorf(netconf.CodeInvalidEnv, "the pod has no interface %q; chain sbr after the plugin that creates it, with the same CNI_IFNAME", a.IfName)
	}
	if err != nil {
		return fmt.Errorf("looking up %q: %w", a.IfName, err)
	}
	used, err := usedTables()
	if err != nil {
		return err
	}
	main, err := link.RetryDump(func() ([]netlink.Route, error) { return netlink.RouteList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("listing the routes of %q: %w", a.IfName, err)
	}
	for table, i := firstTable, 0; i < len(ips); table, i = table+1, i+1 {
		for used[table] {
			table++
		}
		if err := addRule(&undo, ips[i], table); err != nil {
			return err
		}
		if err := fillTable(&undo, l, ips[i], table, main); err != nil {
			return err
		}
	}
	return leaveMain(&undo, main)
}

// usedTables are the tables a rule names or a route is in, of any family.
func usedTables() (map[int]bool, error) {
	rules, err := link.RetryDump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("listing the rules: %w", err)
	}
	routes, err := link.RetryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("listing the routes: %w", err)
	}
	used := map[int]bool{}
	for _, r := range rules {
		used[r.Table] = true
	}
	for _, r := range routes {
		used[r.Table] = true
	}
	return used, nil
}

// host is an address of the prevResult as a single-address prefix.
func host(ipc *current.IPConfig) netip.Prefix {
	a, _ := netip.AddrFromSlice(ipc.Address.IP)
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// addRule sends what ipc's address sends to table.
func addRule(undo *cniplugin.Undo, ipc *current.IPConfig, table int) error {
	r := netlink.NewRule()
	r.Src, r.Table = link.IPNet(host(ipc)), table
	if err := netlink.RuleAdd(r); err != nil {
		return fmt.Errorf("adding the rule from %v to table %d: %w", r.Src, table, err)
	}
	undo.Push(fmt.Sprintf("delete the rule from %v", r.Src), func() error { return netlink.RuleDel(r) })
	return nil
}

// fillTable puts in table the default route via ipc's gateway, when it has
// one, and the routes of main that belong to ipc's address.
func fillTable(undo *cniplugin.Undo, l netlink.Link, ipc *current.IPConfig, table int, main []netlink.Route) error {
	f := family.OfIP(ipc.Address.IP)
	var routes []netlink.Route
	if ipc.Gateway != nil {
		routes = append(routes, netlink.Route{LinkIndex: l.Attrs().Index, Dst: link.IPNet(f.Default()), Gw: ipc.Gateway})
	}
	for _, r := range main {
		if r.Family == f.Netlink() && (ipc.Address.Contains(r.Src) || ipc.Address.Contains(r.Gw) || (r.Src == nil && r.Gw == nil)) {
			routes = append(routes, r)
		}
	}
	for _, r := range routes {
		r.Table, r.Flags = table, 0 // the kernel's flags (linkdown) are no input
		// Replace: the gateway's default route may be among main's.
		if err := netlink.RouteReplace(&r); err != nil {
			return fmt.Errorf("adding the route to %v to table %d: %w", r.Dst, table, err)
		}
		undo.Push(fmt.Sprintf("delete the route to %v from table %d", r.Dst, table), func() error { return ignoreGone(netlink.RouteDel(&r)) })
	}
	return nil
}

// leaveMain deletes the interface's routes from the main table, now that
// the tables have them.
func leaveMain(undo *cniplugin.Undo, main []netlink.Route) error {
	for _, r := range main {
		if err := ignoreGone(netlink.RouteDel(&r)); err != nil {
			return fmt.Errorf("deleting the route to %v from the main table: %w", r.Dst, err)
		}
		r.Flags = 0
		undo.Push(fmt.Sprintf("restore the route to %v in the main table", r.Dst), func() error { return netlink.RouteReplace(&r) })
	}
	return nil
}

func ignoreGone(err error) error {
	if errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

// del runs in the pod: the rules from ifName's addresses (or from known,
// those of the prevResult, when the interface is gone) go, those to table
// only when the configuration names one; the tables sbr chose are emptied
// once no rule names them.
func del(ifName string, table *int, known []netip.Addr) error {
	addrs, err := ifaceAddrs(ifName)
	if err != nil {
		return err
	}
	addrs = append(addrs, known...)
	rules, err := link.RetryDump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("listing the rules: %w", err)
	}
	var errs []error
	emptied := map[int]int{} // table -> family
	for _, r := range rules {
		if !fromOneOf(r, addrs) || (table != nil && r.Table != *table) {
			continue
		}
		if err := ignoreGone(netlink.RuleDel(&r)); err != nil {
			errs = append(errs, fmt.Errorf("deleting the rule from %v: %w", r.Src, err))
			continue
		}
		if table == nil {
			emptied[r.Table] = r.Family
		}
	}
	for t, fam := range emptied {
		errs = append(errs, flush(t, fam))
	}
	return errors.Join(errs...)
}

// ifaceAddrs are the addresses ifName holds; none when it is gone.
func ifaceAddrs(ifName string) ([]netip.Addr, error) {
	l, err := netlink.LinkByName(ifName)
	if link.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up %q: %w", ifName, err)
	}
	have, err := link.Addrs(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, a := range have {
		if p, err := link.Prefix(a.IPNet); err == nil {
			addrs = append(addrs, p.Addr())
		}
	}
	return addrs, nil
}

// fromOneOf says whether r is a rule from a single address of addrs.
func fromOneOf(r netlink.Rule, addrs []netip.Addr) bool {
	if r.Src == nil {
		return false
	}
	p, err := link.Prefix(r.Src)
	return err == nil && p.IsSingleIP() && slices.Contains(addrs, p.Addr())
}

// flush empties table of family fam unless a rule still names it.
func flush(table, fam int) error {
	rules, err := link.RetryDump(func() ([]netlink.Rule, error) { return netlink.RuleList(fam) })
	if err != nil || slices.ContainsFunc(rules, func(r netlink.Rule) bool { return r.Table == table }) {
		return err
	}
	routes, err := link.RetryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("listing table %d: %w", table, err)
	}
	var errs []error
	for _, r := range routes {
		errs = append(errs, ignoreGone(netlink.RouteDel(&r)))
	}
	return errors.Join(errs...)
}

// check runs in the pod: ifName exists, and each address has its rule, to
// table when the configuration names one, else to a table routing through
// ifName (via the gateway when the address has one).
func check(ifName string, table *int, ips []*current.IPConfig) error {
	l, err := link.ByName(ifName)
	if err != nil {
		return err
	}
	rules, err := link.RetryDump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("listing the rules: %w", err)
	}
	for _, ipc := range ips {
		src := host(ipc)
		i := slices.IndexFunc(rules, func(r netlink.Rule) bool { return fromOneOf(r, []netip.Addr{src.Addr()}) })
		switch {
		case i < 0:
			return fmt.Errorf("no rule from %v: sbr's ADD is undone; run ADD again", src)
		case table != nil && rules[i].Table != *table:
			return fmt.Errorf("the rule from %v looks up table %d, the configuration says %d", src, rules[i].Table, *table)
		case table == nil:
			if err := checkTable(l, rules[i].Table, ipc); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTable: table routes through l, by ipc's gateway when it has one.
func checkTable(l netlink.Link, table int, ipc *current.IPConfig) error {
	f := family.OfIP(ipc.Address.IP)
	routes, err := link.RetryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(f.Netlink(), &netlink.Route{Table: table, LinkIndex: l.Attrs().Index}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return fmt.Errorf("listing table %d: %w", table, err)
	}
	viaGW := func(r netlink.Route) bool { return ipc.Gateway == nil || r.Gw.Equal(ipc.Gateway) }
	if !slices.ContainsFunc(routes, viaGW) {
		return fmt.Errorf("table %d has no route through %q%s", table, l.Attrs().Name, gwNote(ipc.Gateway))
	}
	return nil
}

func gwNote(gw net.IP) string {
	if gw == nil {
		return ""
	}
	return " via " + gw.String()
}
