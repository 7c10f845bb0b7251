package reliability

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestHealthzAddress: subnetd's /healthz, /readyz and /metrics listen on
// --healthz-ip:--healthz-port and nowhere else: no other socket of its
// namespace listens besides etcd's, and loopback gets no answer.
func TestHealthzAddress(t *testing.T) {
	n := newDaemonNode(t)
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	addr := nodeIP + ":9091"
	n.startSubnetd("subnetd", "--healthz-ip", nodeIP, "--healthz-port", "9091")
	n.eventually("ready at "+addr, 20*time.Second, func() bool { return n.ready(addr) })
	var others []string
	for _, l := range n.listeners() {
		if !strings.HasSuffix(l, ":2379") && !strings.HasSuffix(l, ":2380") {
			others = append(others, l)
		}
	}
	if !slices.Equal(others, []string{addr}) {
		t.Errorf("listening besides etcd: %v, want only %s", others, addr)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		if code, body := n.ns.HTTP(addr, "GET", path, nil); code != 200 {
			t.Errorf("GET %s at %s: %d %s", path, addr, code, body)
		}
		if code, _ := n.ns.HTTP("127.0.0.1:9091", "GET", path, nil); code != 0 {
			t.Errorf("GET %s on loopback answered %d: subnetd listens beyond %s", path, code, nodeIP)
		}
	}
}
