package reliability

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// churnPeer is peer i of the churn test: subnet 10.<1+i/256>.<i%256>.0/24,
// a VTEP at the generation gen's address.
type churnPeer struct{ i, gen int }

func (p churnPeer) subnet() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + p.i/256), byte(p.i % 256), 0}), 24)
}

func (p churnPeer) publicIP() string {
	return fmt.Sprintf("172.%d.%d.%d", 16+p.gen%8, p.i/256, p.i%256)
}

func (p churnPeer) key() string {
	return subnetsPrefix + strings.ReplaceAll(p.subnet().String(), "/", "-")
}

func (n *daemonNode) putChurnPeer(p churnPeer) {
	v, _ := json.Marshal(map[string]any{"PublicIP": p.publicIP(), "BackendType": "vxlan",
		"BackendData": map[string]any{"VNI": 1, "VtepMAC": fmt.Sprintf("0a:00:%02x:%02x:%02x:%02x", p.gen%256, p.i/256, p.i%256, 1)}})
	n.etcd("/v3/kv/put", map[string]any{"key": b64(p.key()), "value": b64(string(v))})
}

// TestPeerChurn: with many peer leases added, renewed, moved to a new VTEP
// and removed, subnetd converges on routes, neighbours and FDB entries that
// are exactly the live peers': no stale kernel entry. 150 peers; 1000 under
// make soak.
func TestPeerChurn(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	n := newDaemonNode(t)
	n.setNetConf(`{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}`)
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	sd := n.startSubnetd("subnetd")
	n.eventually("subnetd ready", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
	env, err := envfile.Read(n.dir + "/subnet.env")
	if err != nil {
		t.Fatal(err)
	}
	count := 150
	if soak() {
		count = 1000
	}
	live := map[int]churnPeer{}
	for i := range count {
		if p := (churnPeer{i: i}); p.subnet() != env.Subnet.Masked() {
			n.putChurnPeer(p)
			live[i] = p
		}
	}
	for round := 1; round <= 3; round++ {
		for i, p := range live {
			switch rand.IntN(4) {
			case 0: // renewed: the same lease written again
				n.putChurnPeer(p)
			case 1: // moved: a new VTEP address and MAC
				p.gen = round
				n.putChurnPeer(p)
				live[i] = p
			case 2:
				n.etcd("/v3/kv/deleterange", map[string]any{"key": b64(p.key())})
				delete(live, i)
			}
		}
	}
	n.eventually(fmt.Sprintf("converged on %d live peers", len(live)), 60*time.Second, func() bool {
		return n.overlayMatches(live) == ""
	})
	if sd.exited() || len(live) < count/10 {
		t.Fatalf("subnetd died (%v) or too few live peers (%d):\n%s", sd.exited(), len(live), sd.output())
	}
	t.Logf("converged on %d live peers of %d", len(live), count)
}

// overlayMatches compares flannel.1's routes, neighbours and FDB with the
// live peers and returns the first difference ("" when they match).
func (n *daemonNode) overlayMatches(live map[int]churnPeer) string {
	var routes, neighs, fdb []string
	for _, p := range live {
		routes = append(routes, p.subnet().String())
		neighs = append(neighs, p.subnet().Addr().String())
		fdb = append(fdb, p.publicIP())
	}
	got := map[string][]string{
		"routes": field(n.ns.Run(n.t, "ip", "-4", "route", "show", "dev", "flannel.1"), 0),
		"neighs": field(n.ns.Run(n.t, "ip", "-4", "neigh", "show", "dev", "flannel.1"), 0),
		"fdb":    field(n.ns.Run(n.t, "bridge", "fdb", "show", "dev", "flannel.1"), "dst"),
	}
	for name, want := range map[string][]string{"routes": routes, "neighs": neighs, "fdb": fdb} {
		slices.Sort(want)
		if !slices.Equal(got[name], want) {
			return fmt.Sprintf("%s: %d entries, want %d", name, len(got[name]), len(want))
		}
	}
	return ""
}

// field returns, sorted, the first word of each line (at=0) or the word
// after the keyword at.
func field(out string, at any) []string {
	var vals []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		switch key := at.(type) {
		case int:
			if len(f) > key {
				vals = append(vals, f[key])
			}
		case string:
			if i := slices.Index(f, key); i >= 0 && i+1 < len(f) {
				vals = append(vals, f[i+1])
			}
		}
	}
	slices.Sort(vals)
	return vals
}
