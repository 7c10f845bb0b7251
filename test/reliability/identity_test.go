package reliability

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// clonedMachineID is the /etc/machine-id both nodes of
// TestSubnetdClonedIdentity see, as two VMs cloned from one image do.
const clonedMachineID = "5e1fc10e5e1fc10e5e1fc10e5e1fc10e"

// bindOver is run by sh in subnetd's private mount namespace: it binds the
// file $0 over the path $1 (/etc/machine-id, the kernel's boot ID), then
// runs the rest.
const bindOver = `mount --bind "$0" "$1" && shift && exec "$@"`

// cloneIP is the second node's address on the first's underlay.
const cloneIP = "192.168.76.11"

// cloneOf is a second node on n's underlay (its ul0 bridge) at cloneIP,
// with a data directory of its own.
func cloneOf(t *testing.T, n *daemonNode) *daemonNode {
	ns := netnstest.New(t, "cni-rel-sd")
	n.ns.Run(t, "ip", "link", "add", "clone0", "type", "veth", "peer", "name", "ul0", "netns", ns.Name)
	n.ns.Run(t, "ip", "link", "set", "clone0", "master", "ul0", "up")
	ns.Run(t, "ip", "addr", "add", cloneIP+"/24", "dev", "ul0")
	ns.Run(t, "ip", "link", "set", "ul0", "up")
	c := &daemonNode{t: t, ns: ns, dir: t.TempDir()}
	c.setNetConf(netConf)
	return c
}

// startFromMachineID runs subnetd without --node-id, in a private mount
// namespace where /etc/machine-id reads clonedMachineID.
func (n *daemonNode) startFromMachineID(name string, extra ...string) *proc {
	n.t.Helper()
	file := filepath.Join(n.dir, "machine-id")
	if err := os.WriteFile(file, []byte(clonedMachineID+"\n"), 0o444); err != nil {
		n.t.Fatal(err)
	}
	return n.spawnBound(name, file, "/etc/machine-id", n.subnetdArgv(append([]string{"--node-id="}, extra...)...)...)
}

// spawnBound runs argv in a private mount namespace where file is bound
// over path.
func (n *daemonNode) spawnBound(name, file, path string, argv ...string) *proc {
	n.t.Helper()
	return n.spawn(name, append([]string{"unshare", "--mount", "--propagation", "private", "--", "sh", "-c", bindOver, file, path}, argv...)...)
}

// leaseRow is a lease key in etcd with its node ID and public IP.
type leaseRow struct{ key, nodeID, publicIP string }

// leasesOf lists the lease keys whose SubnetdNodeID is id.
func (n *daemonNode) leasesOf(id string) []leaseRow {
	n.t.Helper()
	var resp struct{ Kvs []etcdKV }
	end := subnetsPrefix[:len(subnetsPrefix)-1] + "0"
	if err := json.Unmarshal([]byte(n.etcd("/v3/kv/range", map[string]any{"key": b64(subnetsPrefix), "range_end": b64(end)})), &resp); err != nil {
		n.t.Fatal(err)
	}
	var out []leaseRow
	for _, kv := range resp.Kvs {
		var v struct {
			NodeID   string `json:"SubnetdNodeID"`
			PublicIP string
		}
		if json.Unmarshal(unb64(n.t, kv.Value), &v) == nil && v.NodeID == id {
			out = append(out, leaseRow{strings.TrimPrefix(string(unb64(n.t, kv.Key)), subnetsPrefix), v.NodeID, v.PublicIP})
		}
	}
	return out
}

// TestSubnetdClonedIdentity: two nodes cloned from one image (one
// /etc/machine-id, each its own data directory and public IP) on one etcd.
// For 20 s after the clone starts they never both hold or serve the
// subnet: the first keeps its lease (at its address, the only one of the
// identity), subnet.env, peer route and readiness; the clone stays not
// ready with no subnet.env and no flannel.1, and logs once the other node's
// address, the shared identity and the fix. Then the first is killed for
// good: the clone proceeds once its record expired. Before, the clone
// "reused this node's lease": its address in the first's key, both serving it.
func TestSubnetdClonedIdentity(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	if _, err := os.Stat("/etc/machine-id"); err != nil {
		t.Skipf("needs an /etc/machine-id to bind over: %v", err)
	}
	first := newDaemonNode(t)
	clone := cloneOf(t, first)
	first.startEtcd("etcd", "http://127.0.0.1:2379,http://"+nodeIP+":2379")
	first.putPeer(1)
	sd1 := first.startFromMachineID("subnetd-first")
	first.eventually("the first ready", 30*time.Second, func() bool { return first.ready("127.0.0.1:9090") })
	first.eventually("the first's peer routed", 20*time.Second, func() bool { return first.hasRoute(1) })
	own := first.leasesOf(clonedMachineID)
	if len(own) != 1 || own[0].publicIP != nodeIP {
		t.Fatalf("the first's leases: %+v, want one at %s", own, nodeIP)
	}
	env, err := os.ReadFile(filepath.Join(first.dir, "subnet.env"))
	if err != nil {
		t.Fatal(err)
	}

	sd2 := clone.startFromMachineID("subnetd-clone", "--etcd-endpoints", "http://"+nodeIP+":2379")
	start, samples := time.Now(), 0
	for time.Since(start) < 20*time.Second {
		if why := clonedSample(first, clone, own[0], string(env)); why != "" {
			t.Fatalf("%v after the clone started (sample %d): %s", time.Since(start).Round(time.Millisecond), samples, why)
		}
		if sd1.exited() || sd2.exited() {
			t.Fatalf("a subnetd exited:\nfirst:\n%s\nclone:\n%s", sd1.output(), sd2.output())
		}
		samples++
		time.Sleep(200 * time.Millisecond)
	}
	var refusals []string
	for line := range strings.Lines(sd2.output()) {
		if strings.Contains(line, "node identity") {
			refusals = append(refusals, line)
		}
	}
	if len(refusals) != 1 {
		t.Fatalf("the clone logged %d refusals, want one:\n%s", len(refusals), sd2.output())
	}
	for _, want := range []string{clonedMachineID, "at public IP " + nodeIP, "--node-id", "/etc/machine-id", "level=ERROR"} {
		if !strings.Contains(refusals[0], want) {
			t.Errorf("the refusal does not say %q: %s", want, refusals[0])
		}
	}
	if code, body := clone.ns.HTTP("127.0.0.1:9090", "GET", "/readyz", nil); code != 503 || !strings.Contains(body, "node identity") {
		t.Errorf("the clone's /readyz: %d %s; want 503 naming the identity", code, body)
	}
	if strings.Contains(sd1.output(), "lease lost") {
		t.Errorf("the first lost its lease:\n%s", sd1.output())
	}
	t.Logf("%d samples in 20 s: the first undisturbed, the clone refused: %s", samples, strings.TrimSpace(refusals[0]))

	sd1.kill() // gone for good: its record expires unrenewed
	killed := time.Now()
	clone.eventually("the clone ready once the first is gone", 40*time.Second, func() bool { return clone.ready("127.0.0.1:9090") })
	if got := first.leasesOf(clonedMachineID); len(got) != 1 || got[0].publicIP != cloneIP {
		t.Fatalf("after the first left: leases %+v, want one at %s", got, cloneIP)
	}
	t.Logf("the clone proceeded %v after the first was killed", time.Since(killed).Round(100*time.Millisecond))
}

// clonedSample says what is wrong, if anything, at one moment: the first
// must hold and serve its lease, the clone neither it nor any.
func clonedSample(first, clone *daemonNode, own leaseRow, env string) string {
	if !first.ready("127.0.0.1:9090") {
		return "the first is not ready"
	}
	if got := first.leasesOf(clonedMachineID); len(got) != 1 || got[0] != own {
		return "the identity's leases are " + strings.Join(rows(got), ", ") + "; want the first's alone, at " + nodeIP
	}
	if b, err := os.ReadFile(filepath.Join(first.dir, "subnet.env")); err != nil || string(b) != env {
		return "the first's subnet.env changed"
	}
	if !first.hasRoute(1) {
		return "the first lost its peer route"
	}
	if clone.ready("127.0.0.1:9090") {
		return "the clone is ready"
	}
	if _, err := os.Stat(filepath.Join(clone.dir, "subnet.env")); !errors.Is(err, os.ErrNotExist) {
		return "the clone has a subnet.env"
	}
	if out, err := clone.ns.Try("ip", "link", "show", "flannel.1"); err == nil {
		return "the clone has flannel.1: " + out
	}
	return ""
}

func rows(ls []leaseRow) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.key+" at "+l.publicIP)
	}
	return out
}

// TestSubnetdIdentitySameNode: a node's own subnetd, restarted after
// SIGKILL, and again after SIGTERM at a new public IP (a re-IP), takes its
// identity back at once (not after the presence record's 15 s) and keeps
// its subnet, subnet.env and VTEP MAC; its lease then carries the new
// address. Killed and started under another boot ID (a reboot after a
// crash), it waits for its previous boot's record to expire, saying so,
// then keeps its subnet too.
func TestSubnetdIdentitySameNode(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	n := newDaemonNode(t)
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	sd := n.startSubnetd("subnetd-0")
	n.eventually("ready", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
	want := n.nodeState()
	bootID := filepath.Join(n.dir, "boot_id")
	if err := os.WriteFile(bootID, []byte("0b0070c1-0000-4000-8000-000000000001\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		stop   func(*proc)
		ip     string
		reboot bool
	}{
		{"killed", (*proc).kill, nodeIP, false},
		{"re-IP'd", func(p *proc) {
			p.stop()
			n.ns.Run(t, "ip", "addr", "del", nodeIP+"/24", "dev", "ul0")
			n.ns.Run(t, "ip", "addr", "add", "192.168.76.20/24", "dev", "ul0")
		}, "192.168.76.20", false},
		{"rebooted after a crash", (*proc).kill, "192.168.76.20", true},
	}
	for _, s := range steps {
		s.stop(sd)
		if s.reboot {
			sd = n.spawnBound("subnetd-"+s.name, bootID, "/proc/sys/kernel/random/boot_id", n.subnetdArgv()...)
		} else {
			sd = n.startSubnetd("subnetd-" + s.name)
		}
		n.eventually("ready again", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") || sd.exited() })
		took := logTime(t, sd, "holding lease").Sub(logTime(t, sd, "subnetd starting"))
		waited := strings.Contains(sd.output(), "node identity")
		if s.reboot != waited || !s.reboot && took > 5*time.Second {
			t.Fatalf("%s: lease held %v after the start, waited on its identity: %v; want %v:\n%s", s.name, took, waited, s.reboot, sd.output())
		}
		if s.reboot && !strings.Contains(sd.output(), "before a reboot") {
			t.Fatalf("%s: the wait does not say it may be this node's previous boot:\n%s", s.name, sd.output())
		}
		if got := n.nodeState(); got != want {
			t.Fatalf("%s: %+v, want %+v", s.name, got, want)
		}
		if got := n.leasesOf("relnode"); len(got) != 1 || got[0].publicIP != s.ip {
			t.Fatalf("%s: leases %+v, want one at %s", s.name, got, s.ip)
		}
		t.Logf("%s: lease held %v after the start", s.name, took.Round(time.Millisecond))
	}
}
