package cnictl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netns"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
	subnetetcd "github.com/cnisuite/cni/pkg/subnet/etcd"
)

// defaultEtcd is where subnetd's embedded etcd serves (its
// --embedded-etcd-client), used when subnetd runs without --etcd-endpoints.
const defaultEtcd = "http://127.0.0.1:2379"

// etcdOpts are the flags that reach etcd, flanneld's and subnetd's names.
type etcdOpts struct {
	endpoints, prefix, caFile, certFile, keyFile, nodeIDFile string
	timeout                                                  time.Duration
}

func (o *etcdOpts) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.endpoints, "etcd-endpoints", defaultEtcd, "comma-separated etcd endpoints, as subnetd's (the default is its embedded etcd)")
	fs.StringVar(&o.prefix, "etcd-prefix", subnetetcd.DefaultPrefix, "etcd prefix of the network config and leases")
	fs.StringVar(&o.caFile, "etcd-cafile", "", "CA that signed the etcd servers' certificates")
	fs.StringVar(&o.certFile, "etcd-certfile", "", "client certificate for etcd")
	fs.StringVar(&o.keyFile, "etcd-keyfile", "", "client key for etcd")
	fs.DurationVar(&o.timeout, "etcd-timeout", 3*time.Second, "deadline of each etcd call")
	fs.StringVar(&o.nodeIDFile, "node-id-file", "/var/lib/subnetd/node-id", "subnetd's node identity (in its --data-dir), to find this node's lease")
}

// check rejects flags that cannot make a client (usage errors, exit 2).
func (o etcdOpts) check() error {
	switch {
	case o.timeout <= 0:
		return usagef("--etcd-timeout %v: want a positive duration like 3s", o.timeout)
	case (o.certFile == "") != (o.keyFile == ""):
		return usagef("give both --etcd-certfile and --etcd-keyfile, or neither")
	case len(o.endpointList()) == 0:
		return usagef("--etcd-endpoints is empty; give subnetd's, e.g. %s", defaultEtcd)
	}
	return nil
}

func (o etcdOpts) endpointList() []string {
	var eps []string
	for _, e := range strings.Split(o.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

// open makes a client; it connects lazily, so an unreachable etcd shows in
// the first call, by its deadline, with the endpoint named.
func (o etcdOpts) open() (*subnetetcd.Registry, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	tlsCfg, err := subnetetcd.TLSConfig(o.caFile, o.certFile, o.keyFile)
	if err != nil {
		return nil, err
	}
	// TTL is required by the registry but unused: cnictl writes no lease.
	return subnetetcd.New(subnetetcd.Options{Endpoints: o.endpointList(), Prefix: o.prefix, TLS: tlsCfg, TTL: time.Minute, Timeout: o.timeout})
}

// nodeID is subnetd's identity of this node, "" when its file is unreadable.
func (o etcdOpts) nodeID() string {
	b, err := os.ReadFile(o.nodeIDFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// cluster is what etcd holds about the network.
type cluster struct {
	raw    []byte         // the config's JSON; nil when the key is absent
	cfg    *subnet.Config // nil when absent or malformed
	cfgErr error          // why the config is unusable
	leases []leaseInfo
}

// leaseInfo is one key under <prefix>/subnets/ with its decoded value and
// the time left on the etcd lease it hangs on.
type leaseInfo struct {
	subnet.Entry
	attrs   subnet.Attrs
	err     error // the value is not a lease
	left    time.Duration
	granted time.Duration
	ttlErr  error // subnet.ErrLeaseGone, or the call failed
}

// readCluster reads the config and every lease. It fails only when etcd
// does not answer; what it holds, however broken, is data.
func readCluster(ctx context.Context, reg *subnetetcd.Registry) (*cluster, error) {
	c := &cluster{}
	raw, err := reg.Config(ctx)
	switch {
	case errors.Is(err, subnet.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		c.raw = raw
		if cfg, err := subnet.ParseConfig(raw); err != nil {
			c.cfgErr = err
		} else {
			c.cfg = &cfg
		}
	}
	entries, _, err := reg.List(ctx)
	if err != nil {
		return nil, err
	}
	x := expiries{reg: reg, got: map[int64]expiry{}}
	for _, e := range entries {
		l := leaseInfo{Entry: e}
		l.err = json.Unmarshal(e.Value, &l.attrs)
		if e.Lease != 0 {
			got := x.of(ctx, e.Lease)
			l.left, l.granted, l.ttlErr = got.left, got.granted, got.err
		}
		c.leases = append(c.leases, l)
	}
	slices.SortFunc(c.leases, func(a, b leaseInfo) int {
		if c := a.Subnets.V4.Addr().Compare(b.Subnets.V4.Addr()); c != 0 {
			return c
		}
		return a.Subnets.V6.Addr().Compare(b.Subnets.V6.Addr())
	})
	return c, nil
}

// expiries asks etcd once per etcd lease (a node's keys share one), and
// not at all after a call failed: an etcd that went away meanwhile would
// cost a deadline per key.
type expiries struct {
	reg    *subnetetcd.Registry
	got    map[int64]expiry
	failed error
}

type expiry struct {
	left, granted time.Duration
	err           error
}

func (x *expiries) of(ctx context.Context, id int64) expiry {
	if got, ok := x.got[id]; ok {
		return got
	}
	if x.failed != nil {
		return expiry{err: x.failed}
	}
	var got expiry
	got.left, got.granted, got.err = x.reg.TimeToLive(ctx, id)
	if got.err != nil && !errors.Is(got.err, subnet.ErrLeaseGone) {
		x.failed = got.err
	}
	x.got[id] = got
	return got
}

// howToCheck says how to find out why etcd does not answer.
func (o etcdOpts) howToCheck() string {
	return fmt.Sprintf("check that etcd runs at %s and that this host reaches it: `ETCDCTL_API=3 etcdctl --endpoints %s endpoint health` "+
		"(with --cacert/--cert/--key if it uses TLS); give cnictl the --etcd-endpoints, --etcd-prefix and TLS files subnetd uses", o.endpoints, o.endpoints)
}

// own reports whether l is this node's lease: the subnet of subnet.env, or
// subnetd's identity of this node.
func own(l leaseInfo, env *envfile.Env, id string) bool {
	if id != "" && l.attrs.NodeID == id {
		return true
	}
	return env != nil && subnetsOf(*env) == l.Subnets
}

func subnetsOf(env envfile.Env) subnet.Subnets {
	var s subnet.Subnets
	for _, f := range family.All() {
		if sn := env.SubnetOf(f); sn.IsValid() {
			*s.Of(f) = sn.Masked()
		}
	}
	return s
}

// peers reads one lease as the overlay's peers, by family (nil for a
// family it lacks), with the rules subnetd applies (subnet.LeasePeers, and
// overlay.Host.NodeConflict against this node).
func (l leaseInfo) peers(c subnet.Config, h overlay.Host) (overlay.ByFamily[*overlay.Peer], error) {
	if l.err != nil {
		return overlay.ByFamily[*overlay.Peer]{}, fmt.Errorf("bad lease JSON: %w", l.err)
	}
	v4, v6, err := subnet.LeasePeers(c, l.Subnets, l.attrs)
	if err == nil {
		err = h.NodeConflict(v4, v6)
	}
	if err != nil {
		return overlay.ByFamily[*overlay.Peer]{}, err
	}
	return overlay.ByFamily[*overlay.Peer]{family.IPv4: v4, family.IPv6: v6}, nil
}

// publicIPs are the lease's public addresses, "" for a family it lacks.
func (l leaseInfo) publicIPs() (v4, v6 string) {
	if l.attrs.PublicIP.IsValid() && !l.attrs.PublicIP.IsUnspecified() {
		v4 = l.attrs.PublicIP.String()
	}
	if l.attrs.PublicIPv6.IsValid() {
		v6 = l.attrs.PublicIPv6.String()
	}
	return v4, v6
}

// macs are the lease's VTEP MACs as written, for display.
func (l leaseInfo) macs() (v4, v6 string) { return l.mac(family.IPv4), l.mac(family.IPv6) }

// mac is the lease's VTEP MAC of family f as written, "" when it has none.
func (l leaseInfo) mac(f family.Family) string {
	var d subnet.VXLANData
	_ = json.Unmarshal(*l.attrs.BackendDataOf(f), &d)
	return d.VtepMAC
}

// overlayAudit compares this node's data plane (the backend's vxlan
// devices or host-gw routes) with the leases, by pkg/overlay's own diff
// (Settings.Audit): what subnetd would write there now.
type overlayAudit struct {
	fams []famAudit
	bad  map[subnet.Subnets]error // leases that cannot be programmed, and why
}

// famAudit is one family's device (or what the backend reads instead) and
// its drift.
type famAudit struct {
	family family.Family
	dev    string
	drift  overlay.Drift
	err    error // the device is missing, or could not be read
}

// auditOverlay runs in the namespace of the node; it needs a usable
// config (the caller checks).
func auditOverlay(c *cluster, env *envfile.Env, id string) overlayAudit {
	o := overlayAudit{bad: map[subnet.Subnets]error{}}
	// A failed read leaves host empty: no conflict is shown, none being known.
	host, _ := overlay.ReadHost()
	var peers overlay.ByFamily[[]overlay.Peer]
	var mine *leaseInfo
	for i, l := range c.leases {
		if own(l, env, id) {
			mine = &c.leases[i]
			continue
		}
		ps, err := l.peers(*c.cfg, host)
		if err != nil {
			o.bad[l.Subnets] = err
		}
		for f, p := range ps {
			if p != nil {
				peers[f] = append(peers[f], *p)
			}
		}
	}
	var ownSubnets subnet.Subnets
	if env != nil {
		ownSubnets = subnetsOf(*env)
	}
	for _, f := range c.cfg.Families() {
		o.fams = append(o.fams, auditFamily(c.cfg.Backend, f, *ownSubnets.Of(f), mine, peers[f]))
	}
	return o
}

// auditFamily audits one family of the backend b: what it programs is its
// own to know (its vxlan device, or for host-gw the routes on the
// interface that holds this node's public IP, subnetd's underlay).
func auditFamily(b overlay.Settings, f family.Family, own netip.Prefix, mine *leaseInfo, peers []overlay.Peer) famAudit {
	cfg := overlay.AuditConfig{Family: f, Own: own}
	if mine != nil {
		cfg.Public = *mine.attrs.PublicIPOf(f)
	}
	a := famAudit{family: f}
	a.dev, a.drift, a.err = b.Audit(cfg, peers)
	if errors.Is(a.err, overlay.ErrNoPublicIP) && mine == nil {
		a.err = errors.New("this node's lease, and so its public IP, is unknown")
	}
	return a
}

// reach says whether this node's kernel can carry traffic to a lease's
// subnets: route, neighbour and FDB entry as subnetd programs them. It is
// what this node knows without sending a packet, not a proof that the
// peer answers.
func (o overlayAudit) reach(l leaseInfo, isOwn bool) string {
	if isOwn {
		return "this node"
	}
	if err, bad := o.bad[l.Subnets]; bad {
		return "skipped: " + err.Error()
	}
	if len(o.fams) == 0 {
		return "-"
	}
	var out []string
	for _, f := range o.fams {
		sn := *l.Subnets.Of(f.family)
		if !sn.IsValid() {
			continue
		}
		if errors.Is(f.err, overlay.ErrNoDevice) {
			out = append(out, "no "+f.dev)
			continue
		}
		if f.err != nil {
			out = append(out, "not checked: "+f.err.Error())
			continue
		}
		if why, skipped := f.drift.Skipped[sn]; skipped {
			out = append(out, "skipped: "+why)
			continue
		}
		var kinds []string
		for _, m := range f.drift.Missing {
			if m.Subnet == sn && !slices.Contains(kinds, m.Kind) {
				kinds = append(kinds, m.Kind)
			}
		}
		if len(kinds) > 0 {
			out = append(out, "missing "+strings.Join(kinds, ",")+familyNote[f.family])
		}
	}
	if len(out) == 0 {
		return "ok"
	}
	return strings.Join(out, "; ")
}

// familyNote marks what reach says of the IPv6 half of a lease.
var familyNote = [2]string{family.IPv6: " (v6)"}

func leasesCommand() *command {
	return &command{name: "leases", run: leases,
		usage: "[--json] [--etcd-endpoints URLS] [--etcd-prefix P] [--etcd-cafile F --etcd-certfile F --etcd-keyfile F] [--etcd-timeout D] [--subnet-file F] [--node-id-file F] [--netns PATH] " +
			"| --kube-subnet-mgr [--kubeconfig-file F] [--kube-api-url URL] [--kube-annotation-prefix P] [--net-config-path F] [--node-name N]",
		summary: "list the cluster's subnet leases (in etcd, or the Nodes with --kube-subnet-mgr) and whether this node's kernel routes to each"}
}

// leasesOpts are the flags of `cnictl leases`.
type leasesOpts struct {
	etcd              etcdOpts
	kube              kubeOpts
	subnetFile, netns string
	json              bool
}

func leases(e *env, args []string) error {
	fs := newFlagSet(e, "leases")
	var o leasesOpts
	o.etcd.flags(fs)
	o.kube.flags(fs)
	fs.StringVar(&o.subnetFile, "subnet-file", envfile.DefaultPath, "subnetd's lease file, to tell this node's lease")
	fs.StringVar(&o.netns, "netns", "", "read the overlay's routes of this network namespace instead of the current one")
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	ops, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(ops) > 0 {
		return usagef("leases takes no operands, got %q", ops)
	}
	if err := o.kube.check(); err != nil {
		return err
	}
	if o.kube.on {
		o.kube.dial = e.kubeDial
		return kubeLeases(e, o)
	}
	reg, err := o.etcd.open()
	if err != nil {
		return err
	}
	defer reg.Close()
	c, err := readCluster(context.Background(), reg)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, o.etcd.howToCheck())
	}
	envp := readEnv(o.subnetFile)
	id := o.etcd.nodeID()
	var ov overlayAudit
	if c.cfg != nil {
		if ov, err = auditIn(o.netns, c, envp, id); err != nil {
			return err
		}
	}
	rows := leaseRows(c, ov, envp, id, e.now())
	if o.json {
		return printJSON(e.stdout, rows)
	}
	return printLeases(e.stdout, o.etcd, c, rows, e.now())
}

// readEnv is subnet.env, nil when it is missing or invalid.
func readEnv(path string) *envfile.Env {
	if env, err := envfile.Read(path); err == nil {
		return &env
	}
	return nil
}

// auditIn runs auditOverlay in the namespace nsPath ("": the current one).
func auditIn(nsPath string, c *cluster, env *envfile.Env, id string) (overlayAudit, error) {
	var ov overlayAudit
	audit := func() error { ov = auditOverlay(c, env, id); return nil }
	if nsPath == "" {
		return ov, audit()
	}
	if err := netns.Do(nsPath, audit); err != nil {
		return ov, fmt.Errorf("entering --netns %s: %w", nsPath, err)
	}
	return ov, nil
}

// leaseRow is one lease as `cnictl leases` shows it.
type leaseRow struct {
	Key         string     `json:"key"`
	Subnet      string     `json:"subnet,omitempty"`
	IPv6Subnet  string     `json:"ipv6Subnet,omitempty"`
	NodeID      string     `json:"nodeID,omitempty"`
	PublicIP    string     `json:"publicIP,omitempty"`
	PublicIPv6  string     `json:"publicIPv6,omitempty"`
	Backend     string     `json:"backend,omitempty"`
	VtepMAC     string     `json:"vtepMAC,omitempty"`
	VtepMACv6   string     `json:"vtepMACv6,omitempty"`
	Reservation bool       `json:"reservation"`
	RenewedAt   *time.Time `json:"renewedAt,omitempty"` // the last keep-alive: etcd keeps no creation time
	ExpiresAt   *time.Time `json:"expiresAt,omitempty"`
	Expired     bool       `json:"expired,omitempty"`
	ThisNode    bool       `json:"thisNode"`
	Kernel      string     `json:"kernel"`
	Error       string     `json:"error,omitempty"`
}

func leaseRows(c *cluster, ov overlayAudit, env *envfile.Env, id string, now time.Time) []leaseRow {
	rows := []leaseRow{}
	for _, l := range c.leases {
		isOwn := own(l, env, id)
		r := leaseRow{Key: l.Subnets.Key(), NodeID: l.attrs.NodeID, Backend: l.attrs.BackendType,
			Reservation: l.Lease == 0, ThisNode: isOwn, Kernel: ov.reach(l, isOwn)}
		r.VtepMAC, r.VtepMACv6 = l.macs()
		if l.Subnets.V4.IsValid() {
			r.Subnet = l.Subnets.V4.String()
		}
		if l.Subnets.V6.IsValid() {
			r.IPv6Subnet = l.Subnets.V6.String()
		}
		r.PublicIP, r.PublicIPv6 = l.publicIPs()
		switch {
		case l.err != nil:
			r.Error = "value is not a lease: " + l.err.Error()
		case errors.Is(l.ttlErr, subnet.ErrLeaseGone):
			r.Expired = true
		case l.ttlErr != nil:
			r.Error = l.ttlErr.Error()
		case l.Lease != 0:
			exp, renewed := now.Add(l.left), now.Add(l.left-l.granted)
			r.ExpiresAt, r.RenewedAt = &exp, &renewed
		}
		rows = append(rows, r)
	}
	return rows
}

func printLeases(w io.Writer, o etcdOpts, c *cluster, rows []leaseRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	switch {
	case c.cfg != nil:
		fmt.Fprintf(tw, "network %s, backend %s: %d leases under %s/subnets at %s\n", networkString(*c.cfg), c.cfg.Backend.String(),
			len(rows), strings.TrimRight(o.prefix, "/"), o.endpoints)
	case c.raw == nil:
		fmt.Fprintf(tw, "no network config at %s/config (`cnictl doctor` says how to store one): %d leases at %s\n", strings.TrimRight(o.prefix, "/"), len(rows), o.endpoints)
	default:
		fmt.Fprintf(tw, "the network config at %s/config is unusable (%v): %d leases at %s\n", strings.TrimRight(o.prefix, "/"), c.cfgErr, len(rows), o.endpoints)
	}
	fmt.Fprintln(tw, "SUBNET\tNODE\tPUBLIC IP\tBACKEND\tVTEP MAC\tRENEWED\tEXPIRES\tKERNEL")
	for _, r := range rows {
		expires := "reservation"
		switch {
		case r.Expired:
			expires = "expired"
		case r.ExpiresAt != nil:
			expires = "in " + age(&now, *r.ExpiresAt)
		case !r.Reservation:
			expires = "?"
		}
		renewed := "-"
		if r.RenewedAt != nil {
			renewed = age(r.RenewedAt, now) + " ago"
		}
		kernel := r.Kernel
		if r.Error != "" {
			kernel += " (" + r.Error + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", joinNonEmpty(r.Subnet, r.IPv6Subnet), nodeColumn(r), dash(joinNonEmpty(r.PublicIP, r.PublicIPv6)),
			dash(r.Backend), dash(joinNonEmpty(r.VtepMAC, r.VtepMACv6)), renewed, expires, kernel)
	}
	return tw.Flush()
}

func nodeColumn(r leaseRow) string {
	id := r.NodeID
	if len(id) > 12 {
		id = id[:12] // machine IDs are 32 hex digits; 12 tell nodes apart
	}
	if r.ThisNode {
		return cmp(id, "-") + " (this node)"
	}
	return dash(id)
}

func joinNonEmpty(ss ...string) string {
	return strings.Join(slices.DeleteFunc(ss, func(s string) bool { return s == "" }), ",")
}

func networkString(c subnet.Config) string {
	var nets []string
	for _, f := range c.Families() {
		nets = append(nets, c.NetworkOf(f).String())
	}
	return strings.Join(nets, ",")
}
