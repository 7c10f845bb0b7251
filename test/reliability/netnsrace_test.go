package reliability

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"sync"
	"testing"
	"time"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestNetnsDeletedDuringAdd races the deletion of the pod's namespace
// against bridge ADDs (with host-local and ipMasq): each ADD succeeds or
// fails with a CNI error, the DEL that follows succeeds, and at the end no
// veth, reservation or nat rule is left.
func TestNetnsDeletedDuringAdd(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	node := netnstest.New(t, "cni-rel-node")
	dataDir := t.TempDir()
	conf := mustJSON(t, map[string]any{"cniVersion": "1.1.0", "name": "relrace", "type": "bridge", "bridge": "relbr0", "ipMasq": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": dataDir, "ranges": []any{[]any{map[string]any{"subnet": "10.92.0.0/24"}}}}})
	rounds := 30
	if soak() {
		rounds = 500
	}
	outcomes := map[string]int{}
	for i := range rounds {
		name := fmt.Sprintf("cni-rel-race-%d-%d", i, rand.Uint32())
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
		c := call{plugin: "bridge", cmd: "ADD", stdin: conf, node: node, netns: "/run/netns/" + name,
			containerID: fmt.Sprintf("race-%d", i), ifname: "eth0", umask: -1}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
			_ = exec.Command("ip", "netns", "delete", name).Run()
		}()
		o := c.run(t)
		wg.Wait()
		outcomes[fmt.Sprintf("code %d", o.code(t))]++
		c.cmd = "DEL"
		c.run(t).ok(t, "DEL after the namespace was deleted")
	}
	t.Logf("ADD outcomes over %d rounds: %v", rounds, outcomes)
	deadline := time.Now().Add(10 * time.Second)
	for len(node.Links(t, "type", "veth")) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // the kernel deletes a dead namespace's veths asynchronously
	}
	nothingLeft(t, node, netnstest.New(t, "cni-rel-pod"), dataDir, "")
}
