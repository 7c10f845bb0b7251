package reliability

import (
	"strings"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestReclaimNeedsProof: with reclaimStale on (the default) and a range of
// one address, pod A's namespace loses its path but stays alive, held in a
// way no look at this mount namespace or at /proc can trace: a bind mount in
// another mount namespace, or a socket of a process that left it. Pod B's
// ADD must fail with "no IP addresses available" instead of handing B the
// address A still has; once the holder lets go, the kernel frees A's
// namespace and B's ADD reclaims the address.
func TestReclaimNeedsProof(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, holder := range []struct {
		name string
		hold func(testing.TB, string) func()
	}{
		{"bind mount in another mount namespace", netnstest.HoldByMount},
		{"socket of a process that left it", netnstest.HoldBySocket},
	} {
		t.Run(holder.name, func(t *testing.T) {
			node, podA, podB := netnstest.New(t, "cni-rel-node"), netnstest.New(t, "cni-rel-pod"), netnstest.New(t, "cni-rel-pod")
			conf := mustJSON(t, map[string]any{"cniVersion": "1.1.0", "name": "relrc", "type": "bridge", "bridge": "relrc0", "isGateway": true,
				"ipam": map[string]any{"type": "host-local", "dataDir": t.TempDir(), "ranges": []any{[]any{map[string]any{
					"subnet": "10.81.0.0/24", "rangeStart": "10.81.0.10", "rangeEnd": "10.81.0.10"}}}}})
			add := func(id string, pod *netnstest.NS) outcome {
				return call{plugin: "bridge", cmd: "ADD", stdin: conf, node: node, netns: pod.Path, containerID: id, ifname: "eth0", umask: -1}.run(t)
			}
			if out := add("rc-a", podA); out.exit != 0 || !strings.Contains(out.stdout, "10.81.0.10/24") {
				t.Fatalf("ADD A: %+v", out)
			}
			release := holder.hold(t, podA.Path)
			freed := podA.Remove(t)
			out := add("rc-b", podB)
			if out.exit != 1 || !strings.Contains(out.stdout, "no IP addresses available in network: relrc") || strings.Contains(out.stderr, "reclaimed") {
				t.Fatalf("ADD B while A's namespace is held gave it A's address: %+v", out)
			}
			if addrs := podB.Run(t, "ip", "-o", "addr", "show"); strings.Contains(addrs, "10.81.0.10") {
				t.Fatalf("B holds A's address after a failed ADD:\n%s", addrs)
			}
			release()
			freed(t)
			out = add("rc-b", podB)
			if out.exit != 0 || !strings.Contains(out.stdout, "10.81.0.10/24") || !strings.Contains(out.stderr, "reclaimed the address of an attachment that is gone") {
				t.Fatalf("ADD B once A's namespace was freed: %+v", out)
			}
			if out := (call{plugin: "bridge", cmd: "DEL", stdin: conf, node: node, netns: podB.Path, containerID: "rc-b", ifname: "eth0", umask: -1}).run(t); out.exit != 0 {
				t.Fatalf("DEL B: %+v", out)
			}
		})
	}
}
