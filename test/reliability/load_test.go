package reliability

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// usage is what the kernel says a process holds.
type usage struct{ rssKB, fds int }

func usageOf(t *testing.T, pid int) usage {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var u usage
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			u.rssKB, _ = strconv.Atoi(f[1])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	u.fds = len(fds)
	return u
}

// loadChain is the flannel + portmap conflist as kubelet reads it, with the
// state kept under dir.
func loadChain(t *testing.T, subnetEnv, dir string) *libcni.NetworkConfigList {
	t.Helper()
	list, err := libcni.ConfListFromBytes(mustJSON(t, map[string]any{
		"cniVersion": "1.1.0", "name": "relload",
		"plugins": []any{
			map[string]any{"type": "flannel", "subnetFile": subnetEnv, "dataDir": filepath.Join(dir, "flannel"),
				"ipam":     map[string]any{"dataDir": filepath.Join(dir, "ipam")},
				"delegate": map[string]any{"hairpinMode": true, "isDefaultGateway": true}},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// TestLoadFlannelChain: ADD/DEL cycles, 8 at a time, through libcni on the
// flannel + portmap chain of a node whose subnet.env subnetd wrote: no
// failure, no address given to two live pods, subnetd's memory and open
// files flat, and nothing left at the end. 200 cycles; 2000 under make soak.
func TestLoadFlannelChain(t *testing.T) {
	n := newDaemonNode(t)
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	sd := n.startSubnetd("subnetd")
	n.eventually("subnetd ready", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
	cycles, workers := 200, 8
	if soak() {
		cycles = 2000
	}
	state := t.TempDir()
	list := loadChain(t, filepath.Join(n.dir, "subnet.env"), state)
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(state, "cache"), nil)
	l := &loadRun{t: t, node: n.ns, cni: cni, list: list, live: map[netip.Addr]string{}}
	before := usageOf(t, sd.cmd.Process.Pid)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		pod := netnstest.New(t, "cni-rel-pod")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < cycles && !t.Failed(); i += workers {
				l.cycle(pod, fmt.Sprintf("load-%d", i), 20000+w)
			}
		}()
	}
	wg.Wait()
	// subnetd may still be answering the last pods' link events (an
	// iptables-save child's pipes, a netlink socket): a leak stays, so the
	// check waits up to 5 s for a sample within bounds.
	grew := func(u usage) bool { return u.fds > before.fds+2 || u.rssKB > before.rssKB*5/4+2048 }
	after := usageOf(t, sd.cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); grew(after) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		after = usageOf(t, sd.cmd.Process.Pid)
	}
	t.Logf("%d cycles at %d in parallel in %v; subnetd RSS %d -> %d kB, fds %d -> %d",
		cycles, workers, time.Since(start).Round(time.Millisecond), before.rssKB, after.rssKB, before.fds, after.fds)
	if grew(after) {
		t.Errorf("subnetd grew under load and stayed so for 5 s: %+v -> %+v", before, after)
	}
	l.noLeaks(state)
}

type loadRun struct {
	t    *testing.T
	node *netnstest.NS
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
	mu   sync.Mutex
	live map[netip.Addr]string // address -> container
}

// cycle adds a pod with a host port and deletes it, from inside the node.
func (l *loadRun) cycle(pod *netnstest.NS, id string, hostPort int) {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path, IfName: "eth0",
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": hostPort, "containerPort": 80, "protocol": "tcp"}}}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var addrs []netip.Addr
	err := netns.Do(l.node.Path, func() error {
		res, err := l.cni.AddNetworkList(ctx, l.list, rt)
		if err != nil {
			return fmt.Errorf("ADD %s: %w", id, err)
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			return err
		}
		for _, ip := range r.IPs {
			a, _ := netip.AddrFromSlice(ip.Address.IP)
			addrs = append(addrs, a.Unmap())
		}
		return nil
	})
	if err == nil {
		err = l.claim(id, addrs)
	}
	if err == nil {
		l.release(addrs)
		err = netns.Do(l.node.Path, func() error { return l.cni.DelNetworkList(ctx, l.list, rt) })
	}
	if err != nil {
		l.t.Error(err)
	}
}

func (l *loadRun) claim(id string, addrs []netip.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(addrs) == 0 {
		return fmt.Errorf("ADD %s returned no address", id)
	}
	for _, a := range addrs {
		if other, ok := l.live[a]; ok {
			return fmt.Errorf("%s given to %s while %s holds it", a, id, other)
		}
		l.live[a] = id
	}
	return nil
}

func (l *loadRun) release(addrs []netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range addrs {
		delete(l.live, a)
	}
}

// attachmentChain matches the per-attachment chains of masquerade (CNI-<24
// hex>) and port mappings (CNI-DN-<...>); the shared CNI-HOSTPORT-* chains
// stay, as the reference's do.
var attachmentChain = regexp.MustCompile(`CNI-(DN-)?[0-9a-f]{20,}`)

func (l *loadRun) noLeaks(state string) {
	t := l.t
	if veths := l.node.Links(t, "type", "veth"); len(veths) > 0 {
		t.Errorf("veths left on the node: %v", veths)
	}
	for _, dir := range []string{filepath.Join(state, "flannel"), filepath.Join(state, "ipam", "relload"), filepath.Join(state, "cache", "results")} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if _, err := netip.ParseAddr(e.Name()); err == nil || strings.Contains(e.Name(), "load-") {
				t.Errorf("left in %s: %s", dir, e.Name())
			}
		}
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		for _, line := range strings.Split(l.node.Run(t, save), "\n") {
			if attachmentChain.MatchString(line) {
				t.Errorf("%s: %s", save, line)
			}
		}
	}
}
