package cnictl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// kubeRow is one Node as `cnictl leases --kube-subnet-mgr` shows it.
type kubeRow struct {
	Node       string   `json:"node"`
	PodCIDRs   []string `json:"podCIDRs"`
	PublicIP   string   `json:"publicIP,omitempty"`
	PublicIPv6 string   `json:"publicIPv6,omitempty"`
	Backend    string   `json:"backend,omitempty"`
	VtepMAC    string   `json:"vtepMAC,omitempty"`
	VtepMACv6  string   `json:"vtepMACv6,omitempty"`
	State      string   `json:"state"` // ok, no podCIDR yet, annotations missing, bad podCIDR: ..., bad annotation: ..., skipped: ...
	ThisNode   bool     `json:"thisNode"`
	Kernel     string   `json:"kernel"`
}

// kubeLeases lists the Nodes as subnetd reads them (--kube-subnet-mgr).
func kubeLeases(e *env, o leasesOpts) error {
	raw, nc, err := o.kube.readNetConf()
	if err != nil {
		return fmt.Errorf("--net-config-path %s: %w; pass subnetd's", o.kube.netConfPath, err)
	}
	cfg, err := o.kube.restConfig(o.etcd.timeout)
	if err != nil {
		return err
	}
	kc, err := readKube(context.Background(), cfg, o.kube, raw, nc)
	if err != nil {
		f := apiProblem(err, cfg.Host, nil)
		return fmt.Errorf("%s: %w\n%s", f.Message, err, f.Fix)
	}
	ov, err := auditIn(o.netns, &kc.cluster, readEnv(o.subnetFile), o.kube.nodeName)
	if err != nil {
		return err
	}
	rows := kubeRows(kc, ov, o.kube.nodeName)
	if o.json {
		return printJSON(e.stdout, rows)
	}
	return printKubeLeases(e.stdout, o.kube, cfg.Host, kc, rows)
}

func kubeRows(kc *kubeCluster, ov overlayAudit, self string) []kubeRow {
	rows := []kubeRow{}
	for _, k := range kc.nodes {
		r := kubeRow{Node: k.name, PodCIDRs: k.podCIDRs, State: k.state(ov), ThisNode: k.name == self, Kernel: "-"}
		if r.PodCIDRs == nil {
			r.PodCIDRs = []string{}
		}
		if k.err == nil {
			r.Backend = k.lease.attrs.BackendType
			r.PublicIP, r.PublicIPv6 = k.lease.publicIPs()
			r.VtepMAC, r.VtepMACv6 = k.lease.macs()
		}
		switch {
		case r.ThisNode:
			r.Kernel = "this node"
		case r.State == "ok":
			r.Kernel = ov.reach(k.lease, false)
		}
		rows = append(rows, r)
	}
	return rows
}

func printKubeLeases(w io.Writer, o kubeOpts, host string, kc *kubeCluster, rows []kubeRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "network %s, backend %s (%s): %d Nodes at %s, %d with a lease\n", networkString(*kc.cfg), kc.cfg.Backend.String(),
		o.netConfPath, len(rows), host, len(kc.leases))
	fmt.Fprintln(tw, "NODE\tPODCIDRS\tPUBLIC IP\tBACKEND\tVTEP MAC\tSTATE\tKERNEL")
	for _, r := range rows {
		name := r.Node
		if r.ThisNode {
			name += " (this node)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, dash(strings.Join(r.PodCIDRs, ",")), dash(joinNonEmpty(r.PublicIP, r.PublicIPv6)),
			dash(r.Backend), dash(joinNonEmpty(r.VtepMAC, r.VtepMACv6)), r.State, r.Kernel)
	}
	return tw.Flush()
}
