package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/subnet"
)

// flannelVersion is the flanneld release subnetd is measured against (issue 5).
const flannelVersion = "v0.28.10"

// flannelBackendDropped is the one import removed from flanneld's main.go
// before building: `go install github.com/flannel-io/flannel@v0.28.10` fails
// because the Go module proxy refuses
// github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc v1.3.188
// ("403 Forbidden: This module version is not available"), which only the
// Tencent Cloud VPC backend uses. The vxlan backend, the etcd registry and
// everything else flanneld runs here are built unchanged.
const flannelBackendDropped = `_ "github.com/flannel-io/flannel/pkg/backend/tencentvpc"`

var buildFlanneld = sync.OnceValues(func() (string, error) {
	dir := filepath.Join(toolDir, "flannel-src")
	if err := flannelSource(dir); err != nil {
		return "", err
	}
	bin := filepath.Join(toolDir, "flanneld")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin,
		"-ldflags", "-X github.com/flannel-io/flannel/pkg/version.Version="+flannelVersion, ".")
	cmd.Dir = dir
	// The copy is outside our module; -mod=mod lets go.sum gain the entries
	// that the dropped backend's absence changes.
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build flanneld %s: %w\n%s", flannelVersion, err, out)
	}
	return bin, nil
})

// flannelSource puts a writable copy of flannel's module source in dir,
// without the Tencent Cloud backend (see flannelBackendDropped).
func flannelSource(dir string) error {
	cmd := exec.Command("go", "mod", "download", "-json", "github.com/flannel-io/flannel@"+flannelVersion)
	cmd.Dir = os.TempDir() // outside our module, so that go.mod stays as it is
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); err != nil || jerr != nil || mod.Dir == "" {
		return fmt.Errorf("go mod download github.com/flannel-io/flannel@%s (needs the Go module proxy): %v %s %s", flannelVersion, err, mod.Error, out)
	}
	if err := os.CopyFS(dir, os.DirFS(mod.Dir)); err != nil {
		return fmt.Errorf("copying flannel's source: %w", err)
	}
	mainGo := filepath.Join(dir, "main.go")
	src, err := os.ReadFile(mainGo)
	if err != nil {
		return err
	}
	if !strings.Contains(string(src), flannelBackendDropped) {
		return fmt.Errorf("flannel %s main.go no longer imports %s; revisit flannelBackendDropped", flannelVersion, flannelBackendDropped)
	}
	return os.WriteFile(mainGo, []byte(strings.Replace(string(src), flannelBackendDropped, "", 1)), 0o644)
}

// flanneld returns flanneld's binary, or skips the test when it cannot be
// built on this machine (no module proxy, say).
func flanneld(t *testing.T) string {
	t.Helper()
	bin, err := buildFlanneld()
	if err != nil {
		t.Skipf("flanneld %s cannot be built here, so interop is untested: %v", flannelVersion, err)
	}
	return bin
}

// startFlanneld runs flanneld on n in etcd v3 mode against the underlay's
// etcd, with the flags a flannel node uses.
func (o *overlayTest) startFlanneld(n *sdNode, bin string) {
	n.log = filepath.Join(n.dir, "flanneld.log")
	n.proc = o.spawn(n.ns, n.log, bin, "--etcd-endpoints", sdEtcdURL, "--etcd-prefix", o.prefix,
		"--iface", "eth0", "--subnet-file", n.envPath(), "-ip-masq")
	o.eventually(n.name+" flanneld's subnet.env", 20*time.Second, func() bool {
		_, err := os.Stat(n.envPath())
		return err == nil
	})
}

// TestFlanneldInterop: flanneld on one node and subnetd on two others, in
// one etcd under flannel's prefix. Pods made by our bridge and host-local
// from each node's subnet.env (flanneld's own file on its node) reach each
// other in every direction; the leases each daemon writes are read and
// programmed by the other; restarting either daemon leaves the other's
// lease untouched.
func TestFlanneldInterop(t *testing.T) {
	t.Parallel() // waits on daemons in namespaces of its own
	for _, tc := range []struct{ name, network string }{
		{"IPv4", `{"Network":"10.251.0.0/16","Backend":{"Type":"vxlan"}}`},
		// flanneld's keys are lower case ("vni", "port"); JSON matches either.
		{"dual-stack, VNI 7 on port 4789", `{"Network":"10.252.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:252::/56","Backend":{"Type":"vxlan","VNI":7,"Port":4789}}`},
	} {
		t.Run(tc.name, func(t *testing.T) { interop(t, tc.network) })
	}
}

func interop(t *testing.T, network string) {
	bin := flanneld(t)
	o := newOverlay(t, "/coreos.com/network", network)
	ours, theirs, ours2 := o.addNode(1), o.addNode(2), o.addNode(3)
	o.startSubnetd(ours, nil) // stores the network config that flanneld reads
	o.waitReady(ours)
	o.startFlanneld(theirs, bin)
	o.startSubnetd(ours2, nil)
	o.waitReady(ours2)
	o.converged()
	for _, n := range o.nodes {
		o.addPod(n)
	}
	o.pingAll()
	o.checkLeases(theirs)
	o.quietLogs()
	o.restartFlanneld(theirs, bin, ours, ours2)
	o.restartSubnetd(ours, theirs, ours2)
	o.quietLogs()
	o.replaceFlanneld(theirs, ours, ours2)
	o.quietLogs()
}

// quietLogs fails on a daemon's log line that says it skipped the other's
// lease, lost its own, or hit an error (but flanneld's "canceled" at its
// stop).
func (o *overlayTest) quietLogs() {
	o.t.Helper()
	bad := []string{"Ignoring bad subnet node", "skipping malformed", "skipping a lease", "lease lost", "level=ERROR"}
	for _, n := range o.nodes {
		data, _ := os.ReadFile(n.log)
		for _, line := range strings.Split(string(data), "\n") {
			isBad := strings.HasPrefix(line, "E1") && !strings.Contains(line, "canceled") // klog's error lines
			for _, b := range bad {
				isBad = isBad || strings.Contains(line, b)
			}
			if isBad {
				o.t.Fatalf("%s's %s: %s", n.name, filepath.Base(n.log), line)
			}
		}
	}
}

// restartFlanneld: flanneld restarted rewrites its own lease (found by its
// public IP) and no other. Its value is the same, as the device and so its
// MAC stayed: subnetd nodes make no netlink write for it. Restarted after
// its devices are gone (as after a reboot), it comes with new random MACs:
// subnetd nodes replace the neighbour and FDB entries and keep no stale one.
func (o *overlayTest) restartFlanneld(theirs *sdNode, bin string, ours ...*sdNode) {
	o.t.Helper()
	writes := func() (n int) {
		for _, sd := range ours {
			data, _ := os.ReadFile(sd.log)
			n += strings.Count(string(data), "programmed peers")
		}
		return n
	}
	key := o.leaseKey(theirs)
	for _, reboot := range []bool{false, true} {
		before, writesBefore := o.leases(), writes()
		oldMAC := vtepMAC(o.t, theirs, o.dev(family.IPv4))
		stop(theirs.proc)
		if reboot {
			theirs.ns.Run(o.t, "ip", "link", "del", o.dev(family.IPv4))
			if o.v6 {
				theirs.ns.Run(o.t, "ip", "link", "del", o.dev(family.IPv6))
			}
		}
		o.startFlanneld(theirs, bin)
		o.eventually("flanneld's lease rewritten", 20*time.Second, func() bool {
			return o.leases()[key].ModRevision > before[key].ModRevision
		})
		o.unchanged(before, ours...)
		o.converged()
		o.pingAll()
		if !reboot && writes() != writesBefore {
			o.t.Fatalf("flanneld's renewal-like rewrite of an unchanged lease made subnetd program peers\n%s", o.logs())
		}
		if newMAC := vtepMAC(o.t, theirs, o.dev(family.IPv4)); reboot == (newMAC == oldMAC) {
			o.t.Fatalf("flanneld's VTEP MAC %s -> %s: want a new one only after its device is gone", oldMAC, newMAC)
		}
		for _, sd := range ours {
			if fdb := sd.ns.Run(o.t, "bridge", "fdb", "show", "dev", o.dev(family.IPv4)); reboot && strings.Contains(fdb, oldMAC) {
				o.t.Fatalf("%s keeps flanneld's old VTEP MAC %s:\n%s", sd.name, oldMAC, fdb)
			}
		}
	}
}

// restartSubnetd: subnetd restarted, and running for two of its check
// intervals, leaves flanneld's lease and subnet.env as they are.
func (o *overlayTest) restartSubnetd(ours, theirs *sdNode, others ...*sdNode) {
	o.t.Helper()
	before := o.leases()
	env := o.env(theirs)
	stop(ours.proc)
	o.startSubnetd(ours, nil)
	o.waitReady(ours)
	time.Sleep(2 * time.Second)
	o.unchanged(before, append(others, theirs)...)
	if after := o.env(theirs); after != env {
		o.t.Fatalf("flanneld's subnet.env changed: %+v -> %+v", env, after)
	}
	o.pingAll()
}

// replaceFlanneld: subnetd started on flanneld's node, in its place, takes
// over flanneld's lease (found by its public IP) and subnet.env: same
// subnets, the pod there keeps its address, the peers follow the new VTEP
// MACs, and flanneld's host rules become exactly subnetd's.
func (o *overlayTest) replaceFlanneld(theirs *sdNode, ours ...*sdNode) {
	o.t.Helper()
	before, env, key := o.leases(), o.env(theirs), o.leaseKey(theirs)
	stop(theirs.proc)
	o.startSubnetd(theirs, nil)
	o.waitReady(theirs)
	if after := o.env(theirs); after.Subnet != env.Subnet || after.IPv6Subnet != env.IPv6Subnet {
		o.t.Fatalf("subnetd in flanneld's place took %v %v, want flanneld's %v %v", after.Subnet, after.IPv6Subnet, env.Subnet, env.IPv6Subnet)
	}
	after := o.leases()
	var a subnet.Attrs
	if err := json.Unmarshal([]byte(after[key].Value), &a); err != nil || a.NodeID != theirs.name || len(after) != len(before) {
		o.t.Fatalf("lease %s after subnetd replaced flanneld: %+v, %v; %d leases, want %d", key, after[key], err, len(after), len(before))
	}
	o.unchanged(before, ours...)
	o.converged()
	o.pingAll()
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		if got, want := o.rules(theirs, save), o.rules(ours[0], save); got != want {
			o.t.Fatalf("%s on %s after subnetd took over from flanneld:\n%s\nwant, as on %s:\n%s", save, theirs.name, got, ours[0].name, want)
		}
	}
}

// rules is n's iptables-save (or ip6tables-save) with its own subnets
// written SUBNET, to compare nodes.
func (o *overlayTest) rules(n *sdNode, save string) string {
	out := n.ns.Run(o.t, save)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	e := o.env(n)
	r := strings.NewReplacer(e.Subnet.Masked().String(), "SUBNET", e.IPv6Subnet.Masked().String(), "SUBNET6")
	return r.Replace(strings.Join(lines, "\n"))
}

// converged waits until every node has the route, neighbour and FDB entry
// of every other node, from the other's lease.
func (o *overlayTest) converged() {
	o.t.Helper()
	for _, n := range o.nodes {
		o.deviceIs(n, family.IPv4, n.ip)
		if o.v6 {
			o.deviceIs(n, family.IPv6, n.ip6)
		}
		for _, p := range o.nodes {
			if p == n {
				continue
			}
			want := o.peerEntries(p)
			err := n.hasEntries(want)
			for deadline := time.Now().Add(20 * time.Second); err != nil && time.Now().Before(deadline); err = n.hasEntries(want) {
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				o.t.Fatalf("%v\n%s", err, o.logs())
			}
		}
	}
}

// entry is one kernel table line a node must hold: the command that shows
// it and the words the line must contain.
type entry struct {
	cmd   []string
	words []string
}

// deviceIs checks n's vxlan device of a family: flannel's VNI, port, local
// address and no learning, whichever daemon made it.
func (o *overlayTest) deviceIs(n *sdNode, f family.Family, local string) {
	o.t.Helper()
	want := fmt.Sprintf("vxlan id %d local %s dev eth0 srcport 0 0 dstport %d nolearning", o.vni, local, o.port)
	if out := n.ns.Run(o.t, "ip", "-d", "link", "show", o.dev(f)); !strings.Contains(out, want) {
		o.t.Fatalf("%s's %s is not %q:\n%s", n.name, o.dev(f), want, out)
	}
}

// peerEntries is what a node holds for peer p, from p's lease: flannel's
// route, permanent neighbour and FDB entry.
func (o *overlayTest) peerEntries(p *sdNode) []entry {
	e := o.env(p)
	want := familyEntries(e.Subnet.Masked(), o.dev(family.IPv4), vtepMAC(o.t, p, o.dev(family.IPv4)), p.ip)
	if o.v6 {
		want = append(want, familyEntries(e.IPv6Subnet.Masked(), o.dev(family.IPv6), vtepMAC(o.t, p, o.dev(family.IPv6)), p.ip6)...)
	}
	return want
}

func familyEntries(s netip.Prefix, dev, mac, publicIP string) []entry {
	ipFamily := fmt.Sprintf("-%d", family.OfPrefix(s).Version())
	return []entry{
		{[]string{"ip", ipFamily, "route", "show", "exact", s.String()}, []string{"via " + s.Addr().String() + " dev " + dev + " ", "onlink"}},
		{[]string{"ip", ipFamily, "neigh", "show", s.Addr().String(), "dev", dev}, []string{"lladdr " + mac + " PERMANENT"}},
		{[]string{"bridge", "fdb", "show", "dev", dev}, []string{mac + " dst " + publicIP + " self permanent"}},
	}
}

// hasEntries reports the first of the entries that n lacks.
func (n *sdNode) hasEntries(want []entry) error {
	for _, e := range want {
		out, err := n.ns.Try(e.cmd...)
		if err != nil {
			return fmt.Errorf("%s: %s: %v", n.name, strings.Join(e.cmd, " "), err)
		}
		for _, w := range e.words {
			if !strings.Contains(out, w) {
				return fmt.Errorf("%s lacks %q in `%s`:\n%s", n.name, w, strings.Join(e.cmd, " "), out)
			}
		}
	}
	return nil
}

// vtepMAC reads the MAC of n's vxlan device dev.
func vtepMAC(t *testing.T, n *sdNode, dev string) string {
	t.Helper()
	var links []struct{ Address string }
	out := n.ns.Run(t, "ip", "-j", "link", "show", dev)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("%s %s: %v %s", n.name, dev, err, out)
	}
	return links[0].Address
}

// flannelAttrs mirrors flanneld's lease.LeaseAttrs and its vxlan lease
// data, field for field and type for type, as flanneld decodes a value.
type flannelAttrs struct {
	PublicIP      string
	PublicIPv6    *string
	BackendType   string
	BackendData   *flannelVXLAN
	BackendV6Data *flannelVXLAN
}

type flannelVXLAN struct {
	VNI     uint32
	VtepMAC string
}

// checkLeases reads every lease with both decoders, flanneld's shape and
// ours, and checks that it says what its node is: key = the node's
// subnets, PublicIP(v6) = its underlay addresses, the network's VNI,
// VtepMAC = its vxlan devices' MACs, attached to an etcd lease so that it
// expires.
func (o *overlayTest) checkLeases(flannelNode *sdNode) {
	t := o.t
	t.Helper()
	kvs := o.leases()
	if len(kvs) != len(o.nodes) {
		t.Fatalf("%d leases in etcd, want %d: %v", len(kvs), len(o.nodes), kvs)
	}
	for _, n := range o.nodes {
		key := o.leaseKey(n)
		kv, ok := kvs[key]
		if !ok {
			t.Fatalf("no lease %s for %s in %v", key, n.name, kvs)
		}
		if kv.Lease == 0 {
			t.Fatalf("%s's lease %s has no etcd lease: it would never expire", n.name, key)
		}
		var theirs flannelAttrs
		if err := json.Unmarshal([]byte(kv.Value), &theirs); err != nil {
			t.Fatalf("%s's lease %s as flanneld reads it: %v", n.name, kv.Value, err)
		}
		var ours subnet.Attrs
		if err := json.Unmarshal([]byte(kv.Value), &ours); err != nil {
			t.Fatalf("%s's lease %s as subnetd reads it: %v", n.name, kv.Value, err)
		}
		if err := o.leaseSays(n, theirs, ours); err != nil {
			t.Fatalf("%s's lease %s: %v", n.name, kv.Value, err)
		}
		if (n == flannelNode) != (ours.NodeID == "") {
			t.Fatalf("%s's lease %s: subnetd's node identity belongs in subnetd's leases only", n.name, kv.Value)
		}
	}
}

// leaseSays compares a lease, decoded both ways, with node n.
func (o *overlayTest) leaseSays(n *sdNode, theirs flannelAttrs, ours subnet.Attrs) error {
	if theirs.BackendType != "vxlan" || ours.BackendType != "vxlan" {
		return fmt.Errorf("backend %q/%q, want vxlan", theirs.BackendType, ours.BackendType)
	}
	if theirs.PublicIP != n.ip || ours.PublicIP.String() != n.ip {
		return fmt.Errorf("PublicIP %q/%s, want %s", theirs.PublicIP, ours.PublicIP, n.ip)
	}
	if err := o.vxlanSays(theirs.BackendData, ours.BackendData, vtepMAC(o.t, n, o.dev(family.IPv4))); err != nil {
		return fmt.Errorf("BackendData: %w", err)
	}
	if !o.v6 {
		if theirs.PublicIPv6 != nil || theirs.BackendV6Data != nil {
			return errors.New("IPv6 data on an IPv4 network")
		}
		return nil
	}
	if theirs.PublicIPv6 == nil || *theirs.PublicIPv6 != n.ip6 || ours.PublicIPv6.String() != n.ip6 {
		return fmt.Errorf("PublicIPv6 %v/%s, want %s", theirs.PublicIPv6, ours.PublicIPv6, n.ip6)
	}
	if err := o.vxlanSays(theirs.BackendV6Data, ours.BackendV6Data, vtepMAC(o.t, n, o.dev(family.IPv6))); err != nil {
		return fmt.Errorf("BackendV6Data: %w", err)
	}
	return nil
}

func (o *overlayTest) vxlanSays(theirs *flannelVXLAN, raw json.RawMessage, mac string) error {
	var ours subnet.VXLANData
	if err := json.Unmarshal(raw, &ours); err != nil || theirs == nil {
		return fmt.Errorf("missing or undecodable: %v", err)
	}
	if int(theirs.VNI) != o.vni || ours.VNI != o.vni || theirs.VtepMAC != mac || ours.VtepMAC != mac {
		return fmt.Errorf("VNI %d/%d and VtepMAC %s/%s, want VNI %d and %s", theirs.VNI, ours.VNI, theirs.VtepMAC, ours.VtepMAC, o.vni, mac)
	}
	return nil
}

// unchanged fails unless the leases of nodes are as in before: same value,
// revision and etcd lease (its key is the one of the node's subnet.env).
func (o *overlayTest) unchanged(before map[string]etcdKV, nodes ...*sdNode) {
	o.t.Helper()
	after := o.leases()
	var errs []error
	for _, n := range nodes {
		key := o.leaseKey(n)
		if b, a := before[key], after[key]; a != b {
			errs = append(errs, fmt.Errorf("%s's lease changed:\n  before %+v\n  after  %+v", n.name, b, a))
		}
	}
	if err := errors.Join(errs...); err != nil {
		o.t.Fatalf("%v\n%s", err, o.logs())
	}
}
