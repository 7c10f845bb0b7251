package cnictl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/subnet"
)

// checkEtcd reads the network config and every lease once; the checks
// after it work on that copy. An etcd that does not answer is one finding:
// the lease and overlay checks then report nothing rather than a cascade.
func checkEtcd(n *node) []Finding {
	if !n.flannel() {
		return nil
	}
	reg, err := n.etcd.open()
	if err != nil {
		return []Finding{{Severity: Error, Message: "cannot read the etcd TLS files", Evidence: []string{err.Error()},
			Fix: "pass subnetd's --etcd-cafile, --etcd-certfile and --etcd-keyfile (the files must be readable here)"}}
	}
	defer reg.Close()
	c, err := readCluster(context.Background(), reg)
	if err != nil {
		return []Finding{{Severity: Error,
			Message:  "etcd does not answer at " + n.etcd.endpoints + ": subnetd can neither renew this node's lease nor see the others; the lease and overlay checks are skipped",
			Evidence: []string{err.Error()}, Fix: n.etcd.howToCheck()}}
	}
	n.cluster = c
	return ok(fmt.Sprintf("etcd at %s answers: %d leases under %s/subnets", n.etcd.endpoints, len(c.leases), n.prefix()))
}

func (n *node) prefix() string { return strings.TrimRight(n.etcd.prefix, "/") }

// exampleConfig is the config this node's subnet.env implies (its networks
// and subnet lengths, so that new leases fit the existing ones), or
// flannel's usual one, as JSON for etcdctl.
func (n *node) exampleConfig() string {
	if n.env == nil || !n.env.Network.IsValid() {
		return `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	}
	c := fmt.Sprintf(`"Network":"%s"`, n.env.Network)
	if n.env.Subnet.IsValid() {
		c += fmt.Sprintf(`,"SubnetLen":%d`, n.env.Subnet.Bits())
	}
	if n.env.IPv6Network.IsValid() {
		c += fmt.Sprintf(`,"EnableIPv6":true,"IPv6Network":"%s"`, n.env.IPv6Network)
		if n.env.IPv6Subnet.IsValid() {
			c += fmt.Sprintf(`,"IPv6SubnetLen":%d`, n.env.IPv6Subnet.Bits())
		}
	}
	return `{` + c + `,"Backend":{"Type":"vxlan"}}`
}

func (n *node) etcdctlPut() string {
	return fmt.Sprintf("`ETCDCTL_API=3 etcdctl --endpoints %s put %s/config '%s'`", n.etcd.endpoints, n.prefix(), n.exampleConfig())
}

// checkNetConfig: without a usable <prefix>/config subnetd waits forever;
// one that differs from subnet.env means the cluster's network changed under
// this node.
func checkNetConfig(n *node) []Finding {
	c := n.cluster
	if c == nil {
		return nil
	}
	key := n.prefix() + "/config"
	switch {
	case c.raw == nil:
		return []Finding{{Severity: Error, Message: "no network config at " + key + ": subnetd waits for it and no node gets a lease",
			Evidence: []string{"etcd v3 has no key " + key + " (a config written with etcdctl's v2 API, `etcdctl set`, is invisible to the v3 API subnetd reads)"},
			Fix:      "store it: " + n.etcdctlPut() + ", or start subnetd with --net-config FILE holding that JSON"}}
	case c.cfg == nil:
		return []Finding{{Severity: Error, Message: "the network config at " + key + " is unusable: subnetd stays unready",
			Evidence: []string{c.cfgErr.Error(), "value: " + truncate(string(c.raw), 200)},
			Fix:      "store a corrected one: " + n.etcdctlPut()}}
	}
	if n.env != nil {
		var diffs []string
		if c.cfg.EnableIPv4 && n.env.Network.IsValid() && n.env.Network != c.cfg.Network {
			diffs = append(diffs, fmt.Sprintf("FLANNEL_NETWORK=%s, config Network %s", n.env.Network, c.cfg.Network))
		}
		if c.cfg.EnableIPv6 && n.env.IPv6Network.IsValid() && n.env.IPv6Network != c.cfg.IPv6Network {
			diffs = append(diffs, fmt.Sprintf("FLANNEL_IPV6_NETWORK=%s, config IPv6Network %s", n.env.IPv6Network, c.cfg.IPv6Network))
		}
		if len(diffs) > 0 {
			return []Finding{{Severity: Error,
				Message:  "the network config at " + key + " disagrees with " + n.subnetFile + ": the cluster's network changed under this node",
				Evidence: append(diffs, "config: "+truncate(string(c.raw), 200)),
				Fix: "if etcd holds the intended network, restart subnetd on every node (each leases in it and rewrites subnet.env) and recreate the pods, " +
					"which keep addresses of the old one; otherwise put the old config back: " + n.etcdctlPut()}}
		}
	}
	return ok(fmt.Sprintf("network config at %s: %s, backend %s", key, networkString(*c.cfg), c.cfg.Backend.String()))
}

func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// checkNodeLease finds the lease of subnet.env's subnets: it must exist,
// live and be this node's; otherwise the others route this node's pods
// nowhere, or to another node.
func checkNodeLease(n *node) []Finding {
	if n.cluster == nil || n.env == nil {
		return nil
	}
	want := subnetsOf(*n.env)
	id := n.etcd.nodeID()
	restart := "restart subnetd on this node (`systemctl restart subnetd`, or delete its pod) and read its log for why it did not renew (etcd unreachable from this node, a --lease-ttl shorter than an outage); it leases again, the same subnet while that is free"
	var mine *leaseInfo
	for i, l := range n.cluster.leases {
		if l.Subnets == want {
			return judgeOwnLease(n, &n.cluster.leases[i], id, restart)
		}
		if id != "" && l.attrs.NodeID == id {
			mine = &n.cluster.leases[i]
		}
	}
	if mine != nil {
		return []Finding{{Severity: Error,
			Message:  fmt.Sprintf("%s is stale: this node's lease is %s, subnet.env says %s", n.subnetFile, mine.Subnets, want),
			Evidence: []string{fmt.Sprintf("%s/subnets/%s holds SubnetdNodeID %s (%s)", n.prefix(), mine.Subnets.Key(), id, n.etcd.nodeIDFile)},
			Fix:      "restart subnetd on this node so it rewrites subnet.env, then drain the node and `ip link delete cni0`: pods keep addresses of the old subnet"}}
	}
	return []Finding{{Severity: Error,
		Message:  fmt.Sprintf("no lease for this node's subnet %s in etcd: it expired or was deleted, and the other nodes dropped their routes to this node's pods", want),
		Evidence: []string{fmt.Sprintf("%s: FLANNEL_SUBNET %s", n.subnetFile, want), fmt.Sprintf("no key %s/subnets/%s", n.prefix(), want.Key())},
		Fix:      restart}}
}

func judgeOwnLease(n *node, l *leaseInfo, id, restart string) []Finding {
	key := n.prefix() + "/subnets/" + l.Subnets.Key()
	switch {
	case l.err != nil:
		return []Finding{{Severity: Error, Message: key + " does not hold a lease value", Evidence: []string{l.err.Error()},
			Fix: "delete it (`etcdctl del " + key + "`) and restart subnetd on this node"}}
	case id != "" && l.attrs.NodeID != "" && l.attrs.NodeID != id:
		return []Finding{{Severity: Error,
			Message:  fmt.Sprintf("this node's subnet %s is leased by another node (SubnetdNodeID %s, PublicIP %s): two nodes use one subnet", l.Subnets, l.attrs.NodeID, l.attrs.PublicIP),
			Evidence: []string{fmt.Sprintf("%s: FLANNEL_SUBNET %s", n.subnetFile, l.Subnets), fmt.Sprintf("this node is %s (%s)", id, n.etcd.nodeIDFile)},
			Fix: "subnet.env was copied from another node, or the lease was taken over: stop subnetd here, delete " + n.subnetFile +
				", start subnetd so it takes a subnet of its own, then recreate this node's pods. Never copy subnet.env between nodes"}}
	case errors.Is(l.ttlErr, subnet.ErrLeaseGone):
		return []Finding{{Severity: Error, Message: "this node's lease " + l.Subnets.String() + " has expired", Evidence: []string{l.ttlErr.Error()}, Fix: restart}}
	case l.ttlErr != nil:
		return []Finding{{Severity: Warn, Message: "cannot read the expiry of this node's lease", Evidence: []string{l.ttlErr.Error()}}}
	}
	n.ownLease = l
	if l.Lease == 0 {
		return ok("this node's lease " + l.Subnets.String() + " is a reservation (no expiry)")
	}
	now := time.Now()
	return ok(fmt.Sprintf("this node's lease %s expires in %s", l.Subnets, age(&now, now.Add(l.left))),
		fmt.Sprintf("etcd lease %x: %v left of %v", l.Lease, l.left, l.granted))
}

// checkVXLANDevice: a node with a lease but no flannel.<VNI> reaches no
// other node's pods, and none of theirs reach it.
func checkVXLANDevice(n *node) []Finding {
	if n.ownLease == nil || n.cluster.cfg == nil || !n.cluster.cfg.Backend.UsesVTEP() {
		return nil
	}
	b := n.cluster.cfg.Backend
	restart := "restart subnetd on this node; it makes the device. If it fails, its log says why (another vxlan device may hold port %d or VNI %d: `ip -d link show type vxlan`)"
	var fds []Finding
	for _, f := range n.cluster.cfg.Families() {
		name := overlay.DefaultName(b.VNI, f)
		l, err := netlink.LinkByName(name)
		switch {
		case link.IsNotFound(err):
			fds = append(fds, Finding{Severity: Error, Message: name + " does not exist though this node holds lease " + n.ownLease.Subnets.String() + ": no traffic between this node's pods and other nodes'",
				Evidence: []string{"ip link show " + name + ": " + err.Error(), "backend " + b.String()}, Fix: fmt.Sprintf(restart, b.Port, b.VNI)})
			continue
		case err != nil:
			fds = append(fds, Finding{Severity: Warn, Message: "cannot look up " + name, Evidence: []string{err.Error()}})
			continue
		}
		vx, isVX := l.(*netlink.Vxlan)
		var wrong string
		switch {
		case !isVX:
			wrong = "type " + l.Type()
		case vx.VxlanId != b.VNI || vx.Port != b.Port:
			wrong = fmt.Sprintf("vxlan id %d dstport %d", vx.VxlanId, vx.Port)
		case l.Attrs().Flags&net.FlagUp == 0:
			fds = append(fds, Finding{Severity: Error, Message: name + " is down: no traffic through the overlay",
				Evidence: []string{"ip link show " + name + ": state " + l.Attrs().OperState.String()}, Fix: "`ip link set " + name + " up` (subnetd also does at its next check)"})
			continue
		default:
			fds = append(fds, ok(fmt.Sprintf("%s: vxlan id %d dstport %d, up", name, vx.VxlanId, vx.Port))...)
			continue
		}
		fds = append(fds, Finding{Severity: Error, Message: fmt.Sprintf("%s is not the overlay's device (%s, the network config says vxlan id %d dstport %d)", name, wrong, b.VNI, b.Port),
			Evidence: []string{"ip -d link show " + name + ": " + wrong}, Fix: "`ip link delete " + name + "` and " + fmt.Sprintf(restart, b.Port, b.VNI)})
	}
	return fds
}

// maxEvidence bounds the lines of a finding: a thousand missing peers read
// as well from the first few.
const maxEvidence = 8

// checkOverlayPeers compares the vxlan devices' routes, neighbours and FDB
// with what subnetd would program for the other nodes' leases (pkg/overlay's
// own diff): missing entries cut those nodes' pods off, stale ones
// black-hole subnets no node holds.
func checkOverlayPeers(n *node) []Finding {
	if n.cluster == nil || n.cluster.cfg == nil || n.ownLease == nil {
		return nil
	}
	ov := auditOverlay(n.cluster, n.env, n.nodeID())
	var fds []Finding
	var missing, stale, fixes, staleFixes, devs []string
	for _, f := range ov.fams {
		if errors.Is(f.err, overlay.ErrNoDevice) {
			continue // vxlan-device says why
		}
		if f.err != nil {
			fds = append(fds, Finding{Severity: Warn, Message: "cannot compare the " + f.dev + " entries with the leases", Evidence: []string{f.err.Error()}})
			continue
		}
		devs = append(devs, f.dev)
		for _, m := range f.drift.Missing {
			missing = append(missing, fmt.Sprintf("missing %s %s", m.Kind, m.Text))
			fixes = append(fixes, m.Fix)
		}
		for _, s := range f.drift.Stale {
			stale = append(stale, fmt.Sprintf("stale %s %s", s.Kind, s.Text))
			staleFixes = append(staleFixes, s.Fix)
		}
	}
	if len(devs) == 0 {
		return fds
	}
	if len(missing) > 0 {
		fds = append(fds, Finding{Severity: Error,
			Message:  fmt.Sprintf("%d overlay entries for other nodes' leases are missing: pods on those nodes are unreachable from this node's pods", len(missing)),
			Evidence: bound(missing),
			Fix: "subnetd programs these from the leases at every lease change and every --check-interval: if they stay missing, subnetd on this node is stuck or failing its writes " +
				"(read its log). By hand: " + strings.Join(bound(fixes), "; ")})
	}
	if len(stale) > 0 {
		fds = append(fds, Finding{Severity: Warn,
			Message:  fmt.Sprintf("%d overlay entries serve no lease: traffic to those subnets goes to nodes that left", len(stale)),
			Evidence: bound(stale),
			Fix:      "subnetd deletes these at its next reconcile; if they stay, it is not running here. By hand: " + strings.Join(bound(staleFixes), "; ")})
	}
	if fds = append(fds, skippedLeases(n, ov)...); len(fds) == 0 {
		return okOverlay(n, slices.Compact(devs)) // host-gw: one underlay for both families
	}
	return fds
}

// skippedLeases names the leases subnetd cannot program: unreadable ones,
// those that are not the network's or would take over this node's
// addresses or routes, and those pkg/overlay refuses (a colliding subnet or
// VTEP MAC).
func skippedLeases(n *node, ov overlayAudit) []Finding {
	reasons := map[subnet.Subnets][]string{}
	for s, err := range ov.bad {
		reasons[s] = append(reasons[s], err.Error())
	}
	for _, l := range n.cluster.leases {
		for _, f := range ov.fams {
			sn := *l.Subnets.Of(f.family)
			if why, ok := f.drift.Skipped[sn]; ok && sn.IsValid() {
				reasons[l.Subnets] = append(reasons[l.Subnets], why)
			}
		}
	}
	var fds []Finding
	for _, s := range slices.SortedFunc(maps.Keys(reasons), func(a, b subnet.Subnets) int { return strings.Compare(a.Key(), b.Key()) }) {
		fds = append(fds, Finding{Severity: Warn, Message: "the lease of " + s.String() + " cannot be programmed; subnetd skips it too",
			Evidence: reasons[s],
			Fix:      "fix that node's subnetd (it rewrites its lease at restart), or remove it if the node is gone: " + n.forget(s)})
	}
	return fds
}

// forget is the command that removes the lease of s.
func (n *node) forget(s subnet.Subnets) string {
	if n.kube.on {
		for _, l := range n.cluster.leases {
			if l.Subnets == s {
				return "`kubectl delete node " + l.attrs.NodeID + "`"
			}
		}
	}
	return "`etcdctl del " + n.prefix() + "/subnets/" + s.Key() + "`"
}

func okOverlay(n *node, devs []string) []Finding {
	return ok(fmt.Sprintf("%s: routes, neighbours and FDB entries match the %d other nodes' leases", strings.Join(devs, ", "), len(n.cluster.leases)-1),
		"compared by pkg/overlay's own diff, as subnetd's reconcile: nothing to add, rewrite or delete")
}

func bound(lines []string) []string {
	if len(lines) <= maxEvidence {
		return lines
	}
	return append(lines[:maxEvidence:maxEvidence], fmt.Sprintf("and %d more", len(lines)-maxEvidence))
}
