package cnictl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/kube"
)

// checkNetConf reads net-conf.json, without which subnetd does not start.
func checkNetConf(n *node) []Finding {
	if !n.flannel() {
		return nil
	}
	raw, c, err := n.kube.readNetConf()
	if err != nil {
		return []Finding{{Severity: Error, Message: "cannot use " + n.kube.netConfPath + ": subnetd with it does not start; the API, node and overlay checks are skipped",
			Evidence: []string{err.Error()},
			Fix: "pass subnetd's --net-config-path; in kube-flannel.yml it is net-conf.json of the kube-flannel-cfg ConfigMap, " +
				`e.g. {"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`}}
	}
	n.netConf, n.netConfRaw = &c, raw
	return ok(fmt.Sprintf("%s: network %s, backend %s", n.kube.netConfPath, networkString(c), c.Backend.String()))
}

// checkKubeAPI lists the Nodes once, as subnetd's informer does; the checks
// after it work on that copy. It also asks which of subnetd's rights the
// credentials lack: one missing right fails subnetd later (a watch, the
// patch of its annotations) even when the list works.
func checkKubeAPI(n *node) []Finding {
	if n.netConf == nil {
		return nil
	}
	cfg, err := n.kube.restConfig(n.etcd.timeout)
	if err != nil {
		return []Finding{{Severity: Error, Message: "no credentials for the Kubernetes API", Evidence: []string{err.Error()},
			Fix: "pass subnetd's --kubeconfig-file (and --kube-api-url); inside its pod the service account is found without them"}}
	}
	ctx := context.Background()
	kc, err := readKube(ctx, cfg, n.kube, n.netConfRaw, *n.netConf)
	var lacks []string
	if err == nil || apierrors.IsForbidden(err) {
		lacks, _ = missingRights(ctx, cfg) // unknown when this fails too: the list's answer says enough
	}
	if err != nil {
		return []Finding{apiProblem(err, cfg.Host, lacks)}
	}
	n.kc, n.cluster = kc, &kc.cluster
	fds := ok(fmt.Sprintf("the Kubernetes API at %s answers: %d Nodes, %d with a lease", cfg.Host, len(kc.nodes), len(kc.leases)))
	if len(lacks) > 0 {
		fds = append(fds, Finding{Severity: Error,
			Message:  "these credentials lack " + strings.Join(lacks, ", ") + ": subnetd with them cannot follow the Nodes or publish its own annotations",
			Evidence: []string{"SelfSubjectAccessReview at " + cfg.Host}, Fix: rbacFix})
	}
	return fds
}

// checkKubeNode: subnetd takes this node's subnets from its Node's pod
// CIDRs (kube.OwnSubnets, its own rule), and subnet.env must be them.
func checkKubeNode(n *node) []Finding {
	kc, name := n.kc, n.kube.nodeName
	switch {
	case kc == nil:
		return nil
	case kc.own == nil:
		return []Finding{{Severity: Error, Message: fmt.Sprintf("node %q not found: subnetd waits for its Node and this node gets no subnet", name),
			Evidence: []string{fmt.Sprintf("%d Nodes listed, none named %q", len(kc.nodes), name)},
			Fix:      "give --node-name (subnetd: NODE_NAME) the name `kubectl get nodes` shows for this node, or wait until kubelet registers it"}}
	case errors.Is(kc.ownErr, subnet.ErrNotAssigned):
		return []Finding{{Severity: Error,
			Message:  fmt.Sprintf("node %q pod cidr not assigned: subnetd (as flanneld) waits, writes no subnet.env, and no pod of this node starts", name),
			Evidence: []string{"spec.podCIDRs of node " + name + " is empty"}, Fix: podCIDRFix(name, *n.netConf)}}
	case kc.ownErr != nil:
		return []Finding{{Severity: Error,
			Message:  fmt.Sprintf("the pod CIDRs %s of node %q do not fit %s: subnetd refuses them and stays unready", strings.Join(podCIDRs(kc.own), ","), name, n.kube.netConfPath),
			Evidence: []string{kc.ownErr.Error(), "net-conf.json: " + truncate(string(n.netConfRaw), 200)},
			Fix: "net-conf.json's Network (and IPv6Network, when EnableIPv6) must be kube-controller-manager's --cluster-cidr, one per family: correct whichever is wrong. " +
				"A Node's pod CIDRs cannot be changed: delete the Node so that kubelet registers it again and gets new ones"}}
	}
	if i := slices.IndexFunc(kc.leases, func(l leaseInfo) bool { return l.attrs.NodeID == name }); i >= 0 {
		n.ownLease = &kc.leases[i] // its annotations are usable: the overlay checks follow
	}
	return append(ok(fmt.Sprintf("node %q has pod CIDRs %s in %s", name, kc.ownSubs, networkString(*n.netConf))), judgeKubeEnv(n)...)
}

// podCIDRFix says how pod CIDRs get assigned: by kube-controller-manager
// from the cluster CIDR, or by hand.
func podCIDRFix(name string, c subnet.Config) string {
	nets := networkString(c)
	var free []string
	for _, f := range c.Families() {
		free = append(free, fmt.Sprintf(`"<a free /%d of %s>"`, c.SubnetLenOf(f), c.NetworkOf(f)))
	}
	return fmt.Sprintf("let kube-controller-manager assign pod CIDRs: --allocate-node-cidrs=true --cluster-cidr=%s (kubeadm: kubeadm init --pod-network-cidr=%s), "+
		`or assign them by hand: kubectl patch node %s -p '{"spec":{"podCIDR":%s,"podCIDRs":[%s]}}'; subnetd goes on by itself once they are there`,
		nets, nets, name, free[0], strings.Join(free, ","))
}

// judgeKubeEnv: the flannel plugin hands out FLANNEL_SUBNET, which must be
// the Node's pod CIDRs, the subnets the other nodes route here.
func judgeKubeEnv(n *node) []Finding {
	if n.env == nil {
		return nil // subnet-env says why
	}
	if got, want := subnetsOf(*n.env), n.kc.ownSubs; got != want {
		return []Finding{{Severity: Error,
			Message:  fmt.Sprintf("%s is stale: it says %s, node %q has pod CIDRs %s; pods get addresses the other nodes do not route here", n.subnetFile, got, n.kube.nodeName, want),
			Evidence: []string{"FLANNEL_SUBNET/FLANNEL_IPV6_SUBNET of " + n.subnetFile, "spec.podCIDRs of node " + n.kube.nodeName},
			Fix:      "restart subnetd on this node so it rewrites subnet.env, then drain the node and `ip link delete cni0`: pods keep addresses of the old subnet"}}
	}
	return ok(n.subnetFile + " matches the Node's pod CIDRs")
}

// checkKubeAnnotations compares what this node publishes on its Node (what
// every other node programs) with this node: the VTEP MAC of its vxlan
// devices and its public addresses.
func checkKubeAnnotations(n *node) []Finding {
	if n.kc == nil || n.kc.own == nil || n.kc.ownErr != nil {
		return nil
	}
	name := n.kube.nodeName
	k := n.kc.ownNode(name)
	restart := "restart subnetd on this node: it publishes flannel.<VNI>'s MAC and its public address again (`kubectl get node " + name + " -o yaml` shows the annotations)"
	switch {
	case errors.Is(k.err, kube.ErrUnpublished):
		return []Finding{{Severity: Error,
			Message:  fmt.Sprintf("node %q has no %s annotations: subnetd has not published this node's lease, so no other node routes to its pods", name, n.kube.prefix),
			Evidence: []string{"no annotation kube-subnet-manager: \"true\" under " + n.kube.prefix},
			Fix:      "run subnetd --kube-subnet-mgr on this node with the same --kube-annotation-prefix; if it runs, its log says why it cannot publish (RBAC: nodes/status patch)"}}
	case k.err != nil:
		return []Finding{{Severity: Error, Message: fmt.Sprintf("the annotations of node %q are unusable: every other node skips it", name),
			Evidence: []string{k.err.Error()}, Fix: restart}}
	}
	if diffs := annotationDiffs(n, k.lease); len(diffs) > 0 {
		return []Finding{{Severity: Error,
			Message:  fmt.Sprintf("the annotations of node %q do not match this node: the other nodes send its pods' traffic to the wrong place", name),
			Evidence: diffs, Fix: restart}}
	}
	return ok(fmt.Sprintf("node %q publishes this node's public address and VTEP MAC", name))
}

// annotationDiffs lists where the published lease differs from the node.
func annotationDiffs(n *node, l leaseInfo) []string {
	var diffs []string
	c := n.netConf
	if l.attrs.BackendType != c.Backend.Type {
		diffs = append(diffs, fmt.Sprintf("backend-type %q, net-conf.json has %q", l.attrs.BackendType, c.Backend.Type))
	}
	for _, f := range c.Families() {
		ip := *l.attrs.PublicIPOf(f)
		if _, err := overlay.UnderlayOf(ip); err != nil && !overwritten(n, f) {
			diffs = append(diffs, fmt.Sprintf("public address %s: %v", ip, err))
		}
		if !c.Backend.UsesVTEP() {
			continue
		}
		dev := overlay.DefaultName(c.Backend.VNI, f)
		if lk, err := netlink.LinkByName(dev); err == nil && lk.Attrs().HardwareAddr.String() != l.mac(f) {
			diffs = append(diffs, fmt.Sprintf("VtepMAC %q, %s has %s", l.mac(f), dev, lk.Attrs().HardwareAddr))
		} else if err != nil && !link.IsNotFound(err) {
			diffs = append(diffs, fmt.Sprintf("cannot read %s: %v", dev, err))
		}
	}
	return diffs
}

// overwriteSuffix ends the name of each family's public-ip-overwrite
// annotation.
var overwriteSuffix = [2]string{family.IPv4: "public-ip-overwrite", family.IPv6: "public-ipv6-overwrite"}

// overwritten reports whether an operator set the family's public address
// by hand (flanneld's public-ip-overwrite, e.g. a NAT's address), which
// is then no address of this node.
func overwritten(n *node, f family.Family) bool {
	for k, v := range n.kc.own.Annotations {
		if strings.HasPrefix(k, strings.TrimSuffix(n.kube.prefix, "/")) && strings.HasSuffix(k, overwriteSuffix[f]) && v != "" {
			return true
		}
	}
	return false
}
