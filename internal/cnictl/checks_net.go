package cnictl

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/bridge"
	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/regfile"
)

const vxlanName = "flannel.1"

// checkBridgeAddr: when the node's subnet changes (its lease lost and
// acquired again, the node re-joined), cni0 keeps the old subnet's gateway,
// and the bridge plugin then refuses every pod ("cni0" already has an IP
// address different from the gateway): operators hit this after a re-lease.
func checkBridgeAddr(n *node) []Finding {
	br, err := netlink.LinkByName(bridge.DefaultName)
	if err != nil || n.env == nil || !n.env.Subnet.IsValid() {
		return nil // no bridge yet (made at the first pod) or nothing to compare with
	}
	addrs, err := netlink.AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		return []Finding{{Severity: Warn, Message: "cannot list cni0's addresses", Evidence: []string{err.Error()}}}
	}
	var fds []Finding
	for _, a := range addrs {
		ip, okIP := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		subnet := n.env.SubnetOf(family.Of(ip)) // one path for both families: each against its own subnet
		if !okIP || ip.IsLinkLocalUnicast() || !subnet.IsValid() || subnet.Contains(ip) {
			continue
		}
		fds = append(fds, Finding{Severity: Error,
			Message:  fmt.Sprintf("cni0 holds %s, outside this node's subnet %s: pods fail with \"cni0\" already has an IP address different from the gateway", a.IPNet, subnet),
			Evidence: []string{"ip addr show cni0: " + a.IPNet.String(), "subnet.env: " + subnet.String()},
			Fix: fmt.Sprintf("the node's lease changed; drain the node, then `ip link delete cni0` (the bridge plugin recreates it with %s at the next pod)",
				firstHost(subnet))})
	}
	if len(fds) == 0 {
		return ok("cni0's addresses are inside this node's subnets")
	}
	return fds
}

func firstHost(p netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(p.Masked().Addr().Next(), p.Bits())
}

// checkForward: a FORWARD policy of DROP (Docker 1.13 and later set it)
// kills cross-node pod traffic unless a rule accepts the pod network; so
// does an nftables base chain at the forward hook with a drop policy, which
// no other chain (flannel's among them) can overrule.
func checkForward(n *node) []Finding {
	if n.env == nil || !n.env.Network.IsValid() {
		return nil
	}
	net := n.env.Network
	findings, haveIPTables := iptablesForward(net.String())
	drops, err := hostrules.ForwardDrops(net, haveIPTables)
	switch {
	case err != nil:
		findings = append(findings, Finding{Severity: Warn, Message: "cannot read the nftables ruleset", Evidence: []string{err.Error()},
			Fix: "check `nft list ruleset` by hand for forward chains with policy drop"})
	case len(drops) > 0:
		f := Finding{Severity: Error,
			Message:  fmt.Sprintf("nftables chains drop forwarded packets by policy and do not accept the pod network %s both ways: traffic between pods on different nodes is dropped", net),
			Evidence: prefixed("chain ", drops)}
		v := family.OfPrefix(net).NFTables()
		var fixes []string
		for _, c := range drops {
			fixes = append(fixes, fmt.Sprintf("`nft add rule %s %s saddr %s accept; nft add rule %s %s daddr %s accept`", c, v, net, c, v, net))
		}
		f.Fix = strings.Join(fixes, ", ")
		findings = append(findings, f)
	case len(findings) == 0:
		findings = ok("no nftables chain drops forwarded traffic of the pod network " + net.String())
	}
	return findings
}

// iptablesForward judges iptables' FORWARD; have is false, with no
// finding, when iptables is not installed.
func iptablesForward(net string) (findings []Finding, have bool) {
	out, err := exec.Command("iptables-save", "-t", "filter").Output()
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return nil, false
	case err != nil:
		return []Finding{{Severity: Warn, Message: "cannot read the filter table", Evidence: []string{"iptables-save -t filter: " + err.Error()},
			Fix: "check `iptables -S FORWARD` by hand"}}, true
	}
	rules := string(out)
	if !strings.Contains(rules, ":FORWARD DROP") {
		return ok("FORWARD's policy is ACCEPT"), true
	}
	if accepts(rules, "-s "+net) && accepts(rules, "-d "+net) {
		return ok("FORWARD's policy is DROP and the pod network " + net + " is accepted"), true
	}
	return []Finding{{Severity: Error,
		Message:  "FORWARD's policy is DROP and nothing accepts the pod network " + net + ": traffic between pods on different nodes is dropped",
		Evidence: []string{":FORWARD DROP", "no ACCEPT rule with -s " + net + " and -d " + net},
		Fix: fmt.Sprintf("run subnetd with its forward rules on (it installs the FLANNEL-FWD chain), or `iptables -A FORWARD -s %s -j ACCEPT && iptables -A FORWARD -d %s -j ACCEPT`",
			net, net)}}, true
}

// accepts reports whether a rule with match (e.g. "-s 10.244.0.0/16") jumps
// to ACCEPT in FORWARD or in a chain FORWARD reaches (subnetd's FLANNEL-FWD),
// reading iptables-save's "-A CHAIN ..." lines.
func accepts(rules, match string) bool {
	byChain := map[string][]string{}
	for _, l := range strings.Split(rules, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "-A" {
			byChain[f[1]] = append(byChain[f[1]], " "+strings.Join(f[2:], " ")+" ")
		}
	}
	seen := map[string]bool{}
	var walk func(chain string) bool
	walk = func(chain string) bool {
		if seen[chain] {
			return false
		}
		seen[chain] = true
		for _, r := range byChain[chain] {
			if strings.Contains(r, " "+match+" ") && strings.Contains(r, " -j ACCEPT ") {
				return true
			}
			if f := strings.Fields(r); len(f) > 1 && (f[len(f)-2] == "-j" || f[len(f)-2] == "-g") && walk(f[len(f)-1]) {
				return true
			}
		}
		return false
	}
	return walk("FORWARD")
}

// checkBrNetfilter: without br_netfilter bridged pod traffic skips iptables,
// so Services reached from a pod on the same bridge break.
func checkBrNetfilter(n *node) []Finding {
	if len(n.confs) == 0 {
		return nil
	}
	p := filepath.Join(n.sysctlDir, "net", "bridge")
	if _, err := os.Stat(p); err != nil {
		return []Finding{{Severity: Warn, Message: "br_netfilter is not loaded: traffic between pods on the bridge bypasses iptables, so Services break for same-node pods",
			Evidence: []string{err.Error()},
			Fix:      "`modprobe br_netfilter` and `echo br_netfilter > /etc/modules-load.d/br_netfilter.conf` so it stays after a reboot"}}
	}
	return ok("br_netfilter is loaded", p+" exists")
}

// checkMTU: pods whose MTU exceeds what the overlay carries hang on large
// transfers, while small packets (pings among them) still pass.
func checkMTU(n *node) []Finding {
	br, err := netlink.LinkByName(bridge.DefaultName)
	if err != nil || n.env == nil || n.env.MTU == 0 {
		return nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		return []Finding{{Severity: Warn, Message: "cannot list links", Evidence: []string{err.Error()}}}
	}
	var big []string
	for _, l := range links {
		a := l.Attrs()
		if (a.Index == br.Attrs().Index || a.MasterIndex == br.Attrs().Index) && a.MTU > n.env.MTU {
			big = append(big, fmt.Sprintf("%s mtu %d", a.Name, a.MTU))
		}
	}
	if len(big) == 0 {
		return ok(fmt.Sprintf("cni0 and its ports fit FLANNEL_MTU=%d", n.env.MTU))
	}
	return []Finding{{Severity: Error,
		Message:  fmt.Sprintf("pods' MTU is larger than the overlay's %d: large transfers between nodes hang", n.env.MTU),
		Evidence: append(big, fmt.Sprintf("FLANNEL_MTU=%d", n.env.MTU)),
		Fix: fmt.Sprintf("remove any \"mtu\" larger than %d from the conflist, then `ip link set cni0 mtu %d` and recreate the pods listed (their veth keeps the old MTU)",
			n.env.MTU, n.env.MTU)}}
}

// checkChecksum: a kernel that corrupts vxlan checksums after NAT with tx
// checksum offload on (before 5.7) stalls connections through flannel.1
// for ~63 s (the receiver logs "UDP: bad checksum" on port 8472); subnetd
// turns the offload off there, flanneld does not. Later kernels are right
// and keep the offload, which is faster.
func checkChecksum(n *node) []Finding {
	if _, err := netlink.LinkByName(vxlanName); err != nil {
		return nil
	}
	on, err := link.TxChecksum(vxlanName)
	if err != nil {
		return []Finding{{Severity: Warn, Message: "cannot read flannel.1's checksum offload", Evidence: []string{err.Error()},
			Fix: "check with `ethtool -k flannel.1 | grep tx-checksumming`"}}
	}
	release, _, err := regfile.Read(filepath.Join(n.sysctlDir, "kernel", "osrelease"), 256, regfile.Follow)
	kernel := strings.TrimSpace(string(release))
	switch {
	case err != nil:
		return []Finding{{Severity: Warn, Message: "cannot read the kernel's release, to judge flannel.1's checksum offload", Evidence: []string{err.Error()}}}
	case !on:
		return ok("tx checksum offload is off for flannel.1", "kernel "+kernel)
	case !overlay.TxChecksumBroken(kernel):
		return ok("tx checksum offload is on for flannel.1, which kernel " + kernel + " handles right (its vxlan checksum bug after NAT is fixed from 5.7)")
	}
	return []Finding{{Severity: Warn,
		Message:  "tx checksum offload is on for flannel.1, and kernel " + kernel + " (before 5.7) corrupts vxlan checksums after NAT: connections through the overlay stall for ~63 s (\"UDP: bad checksum\" on port 8472)",
		Evidence: []string{"ETHTOOL_GTXCSUM flannel.1: on"},
		Fix:      "restart subnetd, which turns it off on this kernel (flanneld does not), or `ethtool -K flannel.1 tx off`"}}
}
