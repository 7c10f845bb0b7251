package bridge

import (
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestIPv6ForwardedRightAfterAdd: a pod on a fresh bridge answers IPv6 that
// the node forwards from another namespace at once. While the bridge's own
// link-local address was in duplicate address detection, the node's
// neighbour solicitations for the pod went unanswered for ~1.5 s after the
// bridge got its first port, and forwarded packets were dropped.
func TestIPv6ForwardedRightAfterAdd(t *testing.T) {
	e := newEnv(t)
	client := netnstest.New(t, "br-client")
	e.node.Run(t, "ip", "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", client.Name)
	e.node.Run(t, "ip", "addr", "add", "fd99::1/64", "dev", "c0", "nodad")
	e.node.Run(t, "ip", "link", "set", "c0", "up")
	e.node.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	client.Run(t, "ip", "addr", "add", "fd99::2/64", "dev", "eth0", "nodad")
	client.Run(t, "ip", "link", "set", "eth0", "up")
	client.Run(t, "ip", "-6", "route", "add", "default", "via", "fd99::1")
	// The client's path to the node is resolved first, so that only the
	// node's side of the bridge is left to measure.
	client.Run(t, "ping", "-6", "-c", "1", "-W", "2", "fd99::1")

	conf := e.conf(map[string]any{"isDefaultGateway": true}, "fd00:20::/64")
	pod := netnstest.New(t, "br-pod")
	res := e.mustAdd(e.args(pod, "dad-a", conf))
	to := res.IPs[0].Address.IP.String()
	// One echo, one second to answer: a bridge in DAD misses it.
	if out, err := client.Try("ping", "-6", "-c", "1", "-W", "1", to); err != nil {
		t.Fatalf("the first ping from another namespace to %s, right after ADD: %v\n%s", to, err, out)
	}
	if err := e.del(e.args(pod, "dad-a", conf)); err != nil {
		t.Fatal(err)
	}
}
