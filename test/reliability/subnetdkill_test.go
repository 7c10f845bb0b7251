package reliability

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// killFlags make subnetd renew its etcd lease about every second (60 s
// margin on a 61 s lease, checked every second), so that a kill lands on a
// renewal as readily as on anything else.
var killFlags = []string{"--lease-ttl", "61s", "--subnet-lease-renew-margin", "1"}

// TestSubnetdKill: subnetd killed with SIGKILL at random moments: while it
// acquires its lease, sets up the overlay and programs the peers (the first
// moments of a run), and while it renews the lease and programs peers that
// change under it (later). Each time it is started again and must converge:
// the same subnet and subnet.env, the same VTEP MAC on flannel.1 and in its
// lease, exactly one lease key of its node, routes, neighbours and FDB
// entries that are exactly the live peers', and no etcd lease but the one
// its key hangs on (an orphan would live for the lease's TTL). 6 rounds;
// 40 under make soak.
func TestSubnetdKill(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	n := newDaemonNode(t)
	n.setNetConf(`{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}`)
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	if _, err := buildSubnetd(); err != nil { // not timed below
		t.Fatal(err)
	}
	start := time.Now()
	sd := n.startSubnetd("subnetd-0", killFlags...)
	n.eventually("subnet.env written", 30*time.Second, func() bool { return stage(sd) == "running" })
	setupIn := time.Since(start)
	// The acquisition's moments, from the first run's log: from its start
	// (etcd reached) to the lease held, with 2 ms either side.
	acqFrom, acqTo := logTime(t, sd, "subnetd starting").Sub(start)-2*time.Millisecond, logTime(t, sd, "holding lease").Sub(start)+2*time.Millisecond
	n.eventually("subnetd ready", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
	want := n.nodeState()
	live := map[int]churnPeer{}
	n.churnPeers(live, want.subnet, 60)
	n.eventually("peers programmed", 30*time.Second, func() bool { return n.overlayMatches(live) == "" })
	sd.kill()

	rounds := 6
	if soak() {
		rounds = 40
	}
	stages, late := map[string]int{}, 0
	for round := 1; round <= rounds; round++ {
		// Early: killed within its first moments (1.5 times what the first
		// run took to write subnet.env), while acquiring and programming;
		// every other round within the moments the first run acquired in,
		// and with its lease gone as if the node had been down past its
		// TTL: it must grant a new etcd lease and write its key again.
		n.churnPeers(live, want.subnet, 10)
		if round%2 == 0 {
			n.revokeOwnLease()
		}
		p := n.startSubnetd(fmt.Sprintf("subnetd-%d-early", round), killFlags...)
		if round%2 == 0 {
			// From this run's own start of acquisition: a loaded machine
			// delays the process's start, not the acquisition's length.
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(p.output(), `msg="subnetd starting"`); {
				if time.Now().After(deadline) {
					t.Fatalf("subnetd never started:\n%s", p.output())
				}
				time.Sleep(100 * time.Microsecond)
			}
			time.Sleep(time.Duration(rand.Int64N(int64(acqTo - acqFrom))))
		} else {
			time.Sleep(time.Duration(rand.Int64N(int64(setupIn * 3 / 2))))
		}
		p.kill()
		stages[stage(p)]++

		q := n.startSubnetd(fmt.Sprintf("subnetd-%d", round), killFlags...)
		n.converged(t, q, want, live)
		// Late: killed while renewing and programming peers that change.
		n.churnPeers(live, want.subnet, 10)
		time.Sleep(time.Duration(rand.Int64N(int64(2500 * time.Millisecond))))
		q.kill()
		late++
	}
	last := n.startSubnetd("subnetd-last", killFlags...)
	n.converged(t, last, want, live)
	t.Logf("killed %d times in the first %v or within %v of the start of acquisition (%d before holding a lease, %d while setting up, %d once running), %d times while running; %d live peers; converged after each",
		rounds, (setupIn * 3 / 2).Round(time.Millisecond), (acqTo - acqFrom).Round(time.Millisecond),
		stages["acquiring"], stages["setting up"], stages["running"], late, len(live))
}

// logTime is when subnetd logged msg first.
func logTime(t *testing.T, p *proc, msg string) time.Time {
	t.Helper()
	for _, line := range strings.Split(p.output(), "\n") {
		if strings.Contains(line, `msg="`+msg+`"`) {
			ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			return at
		}
	}
	t.Fatalf("subnetd never logged %q:\n%s", msg, p.output())
	return time.Time{}
}

// stage tells from subnetd's log how far it got: acquiring its lease,
// setting up (lease held, subnet.env not yet written) or running.
func stage(p *proc) string {
	switch out := p.output(); {
	case strings.Contains(out, "wrote subnet.env"):
		return "running"
	case strings.Contains(out, "holding lease"):
		return "setting up"
	}
	return "acquiring"
}

// nodeState is what must survive a kill: the subnet, subnet.env and the
// VTEP MAC.
type nodeState struct {
	subnet, env, mac string
}

func (n *daemonNode) nodeState() nodeState {
	n.t.Helper()
	env, err := os.ReadFile(filepath.Join(n.dir, "subnet.env"))
	if err != nil {
		n.t.Fatal(err)
	}
	keys := n.ownKeys()
	if len(keys) != 1 {
		n.t.Fatalf("%d lease keys of this node, want 1: %v", len(keys), keys)
	}
	var s nodeState
	for k := range keys {
		s.subnet = k
	}
	s.env, s.mac = string(env), n.vtepMAC()
	return s
}

// vtepMAC is flannel.1's MAC address.
func (n *daemonNode) vtepMAC() string {
	n.t.Helper()
	f := strings.Fields(n.ns.Run(n.t, "cat", "/sys/class/net/flannel.1/address"))
	if len(f) != 1 {
		n.t.Fatalf("flannel.1 has no MAC address")
	}
	return f[0]
}

// churnPeers adds, moves (new VTEP) and removes k peers at random, keeping
// live in step; peer 0's subnet is ours and never used.
func (n *daemonNode) churnPeers(live map[int]churnPeer, own string, k int) {
	for range k {
		p := churnPeer{i: 1 + rand.IntN(80), gen: rand.IntN(8)}
		if strings.ReplaceAll(p.subnet().String(), "/", "-") == own {
			continue
		}
		if _, ok := live[p.i]; ok && rand.IntN(3) == 0 {
			n.etcd("/v3/kv/deleterange", map[string]any{"key": b64(p.key())})
			delete(live, p.i)
			continue
		}
		n.putChurnPeer(p)
		live[p.i] = p
	}
}

// converged waits for subnetd to be ready with the peers programmed, then
// checks that it kept the node's state and left etcd clean.
func (n *daemonNode) converged(t *testing.T, sd *proc, want nodeState, live map[int]churnPeer) {
	t.Helper()
	n.eventually("ready again", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") || sd.exited() })
	n.eventually("peers programmed", 30*time.Second, func() bool { return n.overlayMatches(live) == "" || sd.exited() })
	if sd.exited() {
		t.Fatalf("subnetd exited:\n%s", sd.output())
	}
	if got := n.nodeState(); got != want {
		t.Errorf("after a kill: %+v, want %+v\n%s", got, want, sd.output())
	}
	for key, mac := range n.ownKeys() {
		if mac != want.mac {
			t.Errorf("lease %s carries VTEP MAC %s, flannel.1 has %s", key, mac, want.mac)
		}
	}
	if orphans := n.orphanLeases(); len(orphans) > 0 {
		t.Errorf("etcd holds leases no key hangs on: %v\n%s", orphans, sd.output())
	}
	if t.Failed() {
		t.FailNow()
	}
}

type etcdKV struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	Lease string `json:"lease"`
}

// ownKeys maps this node's lease keys (by SubnetdNodeID) to the VTEP MAC
// in their value.
func (n *daemonNode) ownKeys() map[string]string {
	n.t.Helper()
	var resp struct{ Kvs []etcdKV }
	end := subnetsPrefix[:len(subnetsPrefix)-1] + "0" // the prefix's range end: '/'+1
	if err := json.Unmarshal([]byte(n.etcd("/v3/kv/range", map[string]any{"key": b64(subnetsPrefix), "range_end": b64(end)})), &resp); err != nil {
		n.t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		var v struct {
			NodeID      string `json:"SubnetdNodeID"`
			BackendData struct{ VtepMAC string }
		}
		if json.Unmarshal(unb64(n.t, kv.Value), &v) == nil && v.NodeID == "relnode" {
			out[strings.TrimPrefix(string(unb64(n.t, kv.Key)), subnetsPrefix)] = v.BackendData.VtepMAC
		}
	}
	return out
}

// revokeOwnLease ends the etcd lease of this node's key; etcd deletes the key.
func (n *daemonNode) revokeOwnLease() {
	n.t.Helper()
	var resp struct{ Kvs []etcdKV }
	key := subnetsPrefix + n.nodeStateSubnet()
	if err := json.Unmarshal([]byte(n.etcd("/v3/kv/range", map[string]any{"key": b64(key)})), &resp); err != nil || len(resp.Kvs) != 1 {
		n.t.Fatalf("reading %s: %v %+v", key, err, resp)
	}
	n.etcd("/v3/lease/revoke", map[string]any{"ID": resp.Kvs[0].Lease})
}

// nodeStateSubnet is the subnet of this node's one lease key.
func (n *daemonNode) nodeStateSubnet() string {
	n.t.Helper()
	for k := range n.ownKeys() {
		return k
	}
	n.t.Fatal("this node holds no lease key")
	return ""
}

// orphanLeases lists etcd's leases (LeaseLeases, the RPC behind the
// client's Leases()) that hold no key.
func (n *daemonNode) orphanLeases() []string {
	n.t.Helper()
	var leases struct{ Leases []struct{ ID string } }
	if err := json.Unmarshal([]byte(n.etcd("/v3/lease/leases", map[string]any{})), &leases); err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for _, l := range leases.Leases {
		var ttl struct {
			TTL  string
			Keys []string `json:"keys"`
		}
		if err := json.Unmarshal([]byte(n.etcd("/v3/lease/timetolive", map[string]any{"ID": l.ID, "keys": true})), &ttl); err != nil {
			n.t.Fatal(err)
		}
		if len(ttl.Keys) == 0 && ttl.TTL != "-1" {
			out = append(out, fmt.Sprintf("%s (ttl %ss)", l.ID, ttl.TTL))
		}
	}
	return out
}

func unb64(t *testing.T, s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
