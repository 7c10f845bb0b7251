package reliability

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const subnetsPrefix = "/coreos.com/network/subnets/"

// putPeer writes a flanneld-style vxlan lease for subnet 10.95.<i>.0/24.
func (n *daemonNode) putPeer(i int) {
	n.t.Helper()
	v, _ := json.Marshal(map[string]any{"PublicIP": fmt.Sprintf("192.168.76.%d", 100+i), "BackendType": "vxlan",
		"BackendData": map[string]any{"VNI": 1, "VtepMAC": fmt.Sprintf("0a:00:00:00:00:%02x", i)}})
	n.etcd("/v3/kv/put", map[string]any{"key": b64(fmt.Sprintf("%s10.95.%d.0-24", subnetsPrefix, i)), "value": b64(string(v))})
}

// movePeer gives peer i's lease a new VTEP: address 192.168.77.<i>, MAC
// 0a:00:00:00:01:<i>.
func (n *daemonNode) movePeer(i int) {
	n.t.Helper()
	v, _ := json.Marshal(map[string]any{"PublicIP": fmt.Sprintf("192.168.77.%d", i), "BackendType": "vxlan",
		"BackendData": map[string]any{"VNI": 1, "VtepMAC": fmt.Sprintf("0a:00:00:00:01:%02x", i)}})
	n.etcd("/v3/kv/put", map[string]any{"key": b64(fmt.Sprintf("%s10.95.%d.0-24", subnetsPrefix, i)), "value": b64(string(v))})
}

// movedPeer reports whether flannel.1's neighbour and FDB entries for peer
// i are movePeer's, and only those.
func (n *daemonNode) movedPeer(i int) bool {
	mac := fmt.Sprintf("0a:00:00:00:01:%02x", i)
	neigh, _ := n.ns.Try("ip", "neigh", "show", fmt.Sprintf("10.95.%d.0", i), "dev", "flannel.1")
	fdb, _ := n.ns.Try("bridge", "fdb", "show", "dev", "flannel.1")
	return strings.Contains(neigh, mac) && strings.Contains(fdb, mac+" dst 192.168.77."+fmt.Sprint(i)) &&
		!strings.Contains(fdb, fmt.Sprintf("0a:00:00:00:00:%02x", i))
}

func (n *daemonNode) deletePeer(i int) {
	n.t.Helper()
	n.etcd("/v3/kv/deleterange", map[string]any{"key": b64(fmt.Sprintf("%s10.95.%d.0-24", subnetsPrefix, i))})
}

// hasRoute reports whether the node routes 10.95.<i>.0/24 over the overlay.
func (n *daemonNode) hasRoute(i int) bool {
	out, _ := n.ns.Try("ip", "route", "show", fmt.Sprintf("10.95.%d.0/24", i))
	return strings.Contains(out, "flannel.1")
}

// TestSubnetdEtcdFaults: subnetd started with etcd unreachable waits (alive,
// unready) and gets ready once etcd comes; it survives etcd killed with
// SIGKILL and restarted, keeping its subnet; and after a watch it was
// frozen on was compacted away, it converges on the leases as they are.
func TestSubnetdEtcdFaults(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	n := newDaemonNode(t)
	sd := n.startSubnetd("subnetd", "--resync-interval", "10s")
	time.Sleep(3 * time.Second)
	if sd.exited() || n.ready("127.0.0.1:9090") {
		t.Fatalf("with etcd unreachable subnetd exited (%v) or got ready:\n%s", sd.exited(), sd.output())
	}
	etcd := n.startEtcd("etcd", "http://127.0.0.1:2379")
	n.eventually("ready once etcd is up", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
	env, err := os.ReadFile(filepath.Join(n.dir, "subnet.env"))
	if err != nil {
		t.Fatal(err)
	}

	etcd.kill()
	time.Sleep(2 * time.Second)
	if sd.exited() {
		t.Fatalf("subnetd exited when etcd died:\n%s", sd.output())
	}
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	n.putPeer(1)
	n.eventually("peer 1 routed after etcd's restart", 30*time.Second, func() bool { return n.hasRoute(1) })
	if now, _ := os.ReadFile(filepath.Join(n.dir, "subnet.env")); string(now) != string(env) {
		t.Errorf("subnet.env changed across etcd's restart:\n%s\n->\n%s", env, now)
	}

	// Freeze subnetd, change the leases under its watch and compact the
	// history it has not read, then let it go on. The events it did not read
	// must outgrow what the connection buffers (TCP and gRPC windows), so
	// that etcd stops sending, marks the watch behind and, once that history
	// is compacted, ends it with a compaction error: ~16 MB of a junk lease
	// written over and over, then removed.
	n.putPeer(5)
	n.eventually("peer 5 routed", 30*time.Second, func() bool { return n.hasRoute(5) })
	_ = sd.cmd.Process.Signal(syscall.SIGSTOP)
	n.deletePeer(1)
	n.movePeer(5) // a new VTEP: its neighbour and FDB entry must follow
	junk := fmt.Sprintf("%s10.95.250.0-24", subnetsPrefix)
	for i := range 32 {
		n.etcd("/v3/kv/put", map[string]any{"key": b64(junk), "value": b64(fmt.Sprintf("%d%s", i, strings.Repeat("x", 512<<10)))})
	}
	n.etcd("/v3/kv/deleterange", map[string]any{"key": b64(junk)})
	for i := range 200 {
		n.putPeer(2 + i%3)
	}
	n.deletePeer(3)
	n.compact()
	_ = sd.cmd.Process.Signal(syscall.SIGCONT)
	n.eventually("converged after the compaction", 30*time.Second, func() bool {
		return !n.hasRoute(1) && n.hasRoute(2) && !n.hasRoute(3) && n.hasRoute(4) && !n.hasRoute(250) && n.movedPeer(5)
	})
	if !n.ready("127.0.0.1:9090") || sd.exited() {
		t.Fatalf("subnetd not ready after the compaction:\n%s", sd.output())
	}
	// Proof that convergence came from a new listing, not a live event
	// stream: the watch's compaction error, or, where etcd lost the events
	// without one (Debian's etcd 3.4.23 does at times, see
	// subnet.DefaultResync), the periodic listing saying what it repaired.
	if out := sd.output(); !strings.Contains(out, "watch revision compacted") && !strings.Contains(out, "watch had missed changes") {
		t.Errorf("subnetd logged neither its watch's compaction error nor a repairing listing:\n%s", out)
	}
}

// compact compacts etcd's history up to its current revision.
func (n *daemonNode) compact() {
	n.t.Helper()
	var st struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if err := json.Unmarshal([]byte(n.etcd("/v3/kv/range", map[string]any{"key": b64("x")})), &st); err != nil {
		n.t.Fatal(err)
	}
	n.etcd("/v3/kv/compaction", map[string]any{"revision": st.Header.Revision, "physical": true})
}
