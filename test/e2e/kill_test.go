package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/dhcp/dhcptest"
	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/netns"
	"github.com/cnisuite/cni/pkg/regfile"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// killCycles is how many ADD/DEL cycles each chain of TestKillSafety runs:
// 60 (a few seconds a chain on a two-core machine), 1000 under SOAK=1 (make
// soak), or CNI_KILL_CYCLES.
func killCycles(t *testing.T) int {
	t.Helper()
	if s := os.Getenv("CNI_KILL_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 8 {
			t.Fatalf("CNI_KILL_CYCLES=%q: want a number of cycles, at least 8", s)
		}
		return n
	}
	if os.Getenv("SOAK") != "" {
		return 1000
	}
	return 60
}

const (
	killWorkers = 8
	killNet     = "killnet"
)

// killID matches the container IDs TestKillSafety gives its pods.
var killID = regexp.MustCompile(`kill-(?:live-)?[0-9]+`)

// attachmentChain matches the per-attachment iptables chains of masquerade
// (CNI-<hex>) and port mappings (CNI-DN-<hex>); the shared CNI-HOSTPORT-*
// chains stay, as the reference's do.
var attachmentChain = regexp.MustCompile(`CNI-(DN-)?[0-9a-f]{20,}`)

// killChain is one conflist under test and what a live attachment of it
// leaves on the node.
type killChain struct {
	name string
	// plugins returns the conflist's plugins for the attachment id ("" for
	// GC), with state kept in r's dirs.
	plugins func(r *killRig, id string) []any
	// setup prepares the node (uplink, subnet.env, DHCP server) before the
	// first ADD.
	setup func(r *killRig)
	// dhcp: the addresses are DHCP leases (r.lab's server and daemon)
	// instead of host-local's reservations.
	dhcp bool
	// devices: each attachment is lent a tap of its own made on the node
	// (host-device), which must be back there under its name after DEL.
	devices bool
	// veths: each live attachment has a veth on the node (bridge); without,
	// the node must hold no link of the chain at all (macvlan).
	veths bool
	// iptables, nft: each live attachment has iptables rules, or rules in
	// portmap's nft table, naming it.
	iptables, nft bool
	// flannel: each live attachment has a saved delegate configuration.
	flannel bool
	// tuning: each live attachment has tuning's saved original values.
	tuning bool
	// ifbs: each live attachment has bandwidth's ifb on the node.
	ifbs bool
}

// bridgeConf is bridge + host-local with masquerade over two ranges of 16:
// with 8 pods in flight and the leaks of killed ADDs, they fill up and ADD
// has to reclaim.
func bridgeConf(r *killRig) map[string]any {
	return map[string]any{"type": "bridge", "bridge": "killbr0", "isGateway": true, "ipMasq": true, "ipam": hostLocal(r)}
}

func hostLocal(r *killRig) map[string]any {
	return map[string]any{"type": "host-local", "dataDir": r.dataDir, "ranges": []any{
		[]any{map[string]any{"subnet": "10.78.0.0/24", "rangeStart": "10.78.0.10", "rangeEnd": "10.78.0.25"}},
		[]any{map[string]any{"subnet": "fd00:78::/64", "rangeStart": "fd00:78::10", "rangeEnd": "fd00:78::1f"}},
	}}
}

func portmapConf(backend string) map[string]any {
	return map[string]any{"type": "portmap", "backend": backend, "capabilities": map[string]any{"portMappings": true}}
}

var killChains = []killChain{
	{name: "bridge", veths: true, iptables: true,
		plugins: func(r *killRig, _ string) []any { return []any{bridgeConf(r)} }},
	{name: "flannel", veths: true, flannel: true,
		plugins: func(r *killRig, _ string) []any {
			return []any{map[string]any{"type": "flannel", "subnetFile": filepath.Join(r.state, "subnet.env"),
				"dataDir": filepath.Join(r.state, "flannel"), "ipam": map[string]any{"dataDir": r.dataDir},
				"delegate": map[string]any{"hairpinMode": true, "isDefaultGateway": true}}}
		},
		setup: func(r *killRig) {
			env := "FLANNEL_NETWORK=10.79.0.0/16\nFLANNEL_SUBNET=10.79.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
			if err := os.WriteFile(filepath.Join(r.state, "subnet.env"), []byte(env), 0o644); err != nil {
				r.t.Fatal(err)
			}
		}},
	{name: "portmap-iptables", veths: true, iptables: true,
		plugins: func(r *killRig, _ string) []any { return []any{bridgeConf(r), portmapConf("iptables")} }},
	{name: "portmap-nftables", veths: true, iptables: true, nft: true,
		plugins: func(r *killRig, _ string) []any { return []any{bridgeConf(r), portmapConf("nftables")} }},
	{name: "tuning", veths: true, iptables: true, tuning: true,
		plugins: func(r *killRig, _ string) []any {
			return []any{bridgeConf(r), map[string]any{"type": "tuning", "dataDir": filepath.Join(r.state, "tuning"),
				"sysctl": map[string]any{"net.core.somaxconn": "500", "net.ipv4.conf.IFNAME.accept_redirects": "0"}}}
		}},
	{name: "bandwidth", veths: true, iptables: true, ifbs: true,
		plugins: func(r *killRig, _ string) []any {
			return []any{bridgeConf(r), map[string]any{"type": "bandwidth",
				"ingressRate": 100_000_000, "ingressBurst": 1_000_000, "egressRate": 100_000_000, "egressBurst": 1_000_000}}
		}},
	{name: "firewall", veths: true, iptables: true,
		plugins: func(r *killRig, _ string) []any {
			return []any{bridgeConf(r), map[string]any{"type": "firewall", "backend": "iptables"}}
		}},
	{name: "ptp+sbr", veths: true, iptables: true,
		plugins: func(r *killRig, _ string) []any {
			return []any{map[string]any{"type": "ptp", "ipMasq": true, "ipam": hostLocal(r)}, map[string]any{"type": "sbr"}}
		}},
	{name: "tap",
		plugins: func(r *killRig, _ string) []any { return []any{map[string]any{"type": "tap", "ipam": hostLocal(r)}} }},
	{name: "macvlan",
		plugins: func(r *killRig, _ string) []any {
			return []any{map[string]any{"type": "macvlan", "master": "killul0", "mode": "bridge", "ipam": hostLocal(r)}}
		},
		setup: func(r *killRig) {
			r.node.Run(r.t, "ip", "link", "add", "killul0", "type", "bridge")
			r.node.Run(r.t, "ip", "link", "set", "killul0", "up")
		}},
	{name: "host-device", devices: true,
		plugins: func(r *killRig, id string) []any {
			return []any{map[string]any{"type": "host-device", "device": killDevice(id), "ipam": hostLocal(r)}}
		}},
	{name: "macvlan+dhcp", dhcp: true,
		plugins: func(r *killRig, _ string) []any {
			return []any{map[string]any{"type": "macvlan", "master": "killul0", "mode": "bridge",
				"ipam": map[string]any{"type": "dhcp", "daemonSocketPath": r.lab.Socket()}}}
		},
		setup: dhcpLab},
}

// dhcpLab gives the node an uplink, killul0, to a server namespace where
// dnsmasq serves, and starts the suite's DHCP daemon in the node from a
// directory of its own: the killer, which kills only binaries of r.bin,
// never hits it. The uplink has an address of the server's network, as a
// node's has: the daemon releases the lease of a pod whose namespace is
// gone from the node's namespace.
func dhcpLab(r *killRig) {
	dhcptest.Skip(r.t)
	srv := netnstest.New(r.t, "cni-kill-srv")
	r.node.Run(r.t, "ip", "link", "add", "killul0", "type", "veth", "peer", "name", "s0", "netns", srv.Name)
	srv.Run(r.t, "ip", "addr", "add", dhcptest.ServerIP+"/24", "dev", "s0")
	srv.Run(r.t, "ip", "link", "set", "s0", "up")
	r.node.Run(r.t, "ip", "addr", "add", "10.77.0.2/24", "dev", "killul0")
	r.node.Run(r.t, "ip", "link", "set", "killul0", "up")
	r.lab = dhcptest.New(r.t, r.t.TempDir())
	r.lab.StartServer(srv, "s0")
	r.lab.StartDaemon(r.node)
}

// killDevice names the node's tap that host-device lends the attachment id.
func killDevice(id string) string {
	return "kd" + strings.ReplaceAll(strings.TrimPrefix(id, "kill-"), "live-", "l")
}

// killRig runs a chain's binaries through libcni inside a node namespace,
// as a runtime does. The binaries are linked into a directory of their own
// so that the killer can tell them from every other process.
type killRig struct {
	t       *testing.T
	chain   killChain
	node    *netnstest.NS
	bin     string
	state   string // subnet.env, flannel's saved configs, libcni's cache
	dataDir string // host-local's
	cni     *libcni.CNIConfig
	lab     *dhcptest.Lab // the DHCP server and daemon of a dhcp chain

	mu        sync.Mutex
	live      map[string]string // address -> container ID, for attachments whose ADD succeeded and DEL has not begun
	forgotten []string          // container IDs a crashed runtime never DELs: GC's to clean
	stats     killStats
	stderr    testutil.SyncBuffer                  // what the plugins write to stderr, which libcni passes to its own
	history   map[string][]string                  // container ID -> its calls and their outcome, for the report of a leak
	lists     map[string]*libcni.NetworkConfigList // container ID -> its conflist
	durations [2]atomic.Int64                      // sums of unkilled ADD and DEL times, µs, for the kill window
	counts    [2]atomic.Int64
}

type killStats struct {
	adds, addsKilled, reAdds, dels, delsKilled atomic.Int64
	victims                                    sync.Map // binary -> *atomic.Int64 kills
}

func newKillRig(t *testing.T, chain killChain) *killRig {
	r := &killRig{t: t, chain: chain, node: netnstest.New(t, "cni-kill-node"), bin: t.TempDir(), state: t.TempDir(),
		dataDir: t.TempDir(), live: map[string]string{}, history: map[string][]string{}, lists: map[string]*libcni.NetworkConfigList{}}
	for _, p := range plugins(t) {
		// A hard link is a path of the rig's own, which is what /proc/PID/exe
		// shows, at no copy's cost.
		if err := os.Link(filepath.Join(binDir, p), filepath.Join(r.bin, p)); err != nil {
			t.Fatal(err)
		}
	}
	if chain.setup != nil {
		chain.setup(r)
	}
	r.cni = libcni.NewCNIConfigWithCacheDir([]string{r.bin}, filepath.Join(r.state, "cache"),
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: &r.stderr}})
	return r
}

// list is the conflist of the attachment id ("" for GC): the chain's
// plugins, the same for every attachment but host-device's device.
func (r *killRig) list(id string) (*libcni.NetworkConfigList, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.lists[id]; l != nil {
		return l, nil
	}
	b, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": killNet, "plugins": r.chain.plugins(r, id)})
	if err != nil {
		return nil, err
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("the test's conflist for %q: %w", id, err)
	}
	r.lists[id] = l
	return l, nil
}

// rt is the runtime's view of one attachment; its host port is unique
// among the cycles.
func (r *killRig) rt(id, netnsPath string) *libcni.RuntimeConf {
	n, _ := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
	port := 20000 + n%20000
	if strings.HasPrefix(id, "kill-live-") {
		port = 19000 + n
	}
	return &libcni.RuntimeConf{ContainerID: id, NetNS: netnsPath, IfName: "eth0",
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": port, "containerPort": 80, "protocol": "tcp"}}}}
}

const (
	verbAdd = iota
	verbDel
)

// run runs the chain's ADD or DEL for id inside the node, killing one of
// its processes at a random moment when kill says so. killed names the
// binary killed, "" when none was.
func (r *killRig) run(verb int, rt *libcni.RuntimeConf, kill bool) (res types.Result, killed string, err error) {
	list, err := r.list(rt.ContainerID)
	if err != nil {
		return nil, "", err
	}
	disarm := func() string { return "" }
	if kill && rand.IntN(3) == 0 {
		disarm = r.arm(verb, rt.ContainerID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = netns.Do(r.node.Path, func() error {
		var err error
		if verb == verbAdd {
			res, err = r.cni.AddNetworkList(ctx, list, rt)
		} else {
			err = r.cni.DelNetworkList(ctx, list, rt)
		}
		return err
	})
	killed = disarm()
	r.record(verb, rt.ContainerID, killed, err, time.Since(start))
	if killed == "" && err == nil {
		r.durations[verb].Add(time.Since(start).Microseconds())
		r.counts[verb].Add(1)
	}
	return res, killed, err
}

// record notes one call in the attachment's history.
func (r *killRig) record(verb int, id, killed string, err error, took time.Duration) {
	what := [...]string{"ADD", "DEL"}[verb]
	switch {
	case killed != "":
		what += " killed " + killed
	case err != nil:
		what += " failed"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.history[id] = append(r.history[id], fmt.Sprintf("%s after %v", what, took.Round(time.Millisecond)))
}

// arm schedules the SIGKILL of one process of id's operation at a random
// moment of the time such an operation takes; disarm cancels it, or waits
// for it and names the binary it killed.
func (r *killRig) arm(verb int, id string) (disarm func() string) {
	window := 30 * time.Millisecond
	if n := r.counts[verb].Load(); n > 0 {
		window = time.Duration(r.durations[verb].Load()/n) * time.Microsecond * 5 / 4
	}
	done := make(chan string, 1)
	timer := time.AfterFunc(time.Duration(rand.Int64N(int64(window))+1), func() { done <- r.killOne(id) })
	return func() string {
		if timer.Stop() {
			return ""
		}
		return <-done
	}
}

// killOne kills, with SIGKILL, one of the processes running a binary of
// the rig's for container id: the plugin libcni ran or a delegate of it. It
// signals through a pidfd opened before checking what the process runs, so
// that a recycled pid is never hit.
func (r *killRig) killOne(id string) string {
	pids := processesIn(r.bin)
	rand.Shuffle(len(pids), func(i, j int) { pids[i], pids[j] = pids[j], pids[i] })
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		hit := err == nil && filepath.Dir(exe) == r.bin && slices.Contains(strings.Split(string(env), "\x00"), "CNI_CONTAINERID="+id) &&
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
		unix.Close(fd)
		if hit {
			n, _ := r.stats.victims.LoadOrStore(filepath.Base(exe), new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			return filepath.Base(exe)
		}
	}
	return ""
}

// processesIn lists the pids whose executable lies in dir.
func processesIn(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && filepath.Dir(target) == dir {
			out = append(out, pid)
		}
	}
	return out
}

// newPod creates a pod namespace from the outer shell; the test deletes it.
func newPod(t *testing.T) *netnstest.NS {
	name := fmt.Sprintf("cni-kill-pod-%08x", rand.Uint32())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Errorf("ip netns add %s: %v: %s", name, err, out)
		return nil
	}
	return &netnstest.NS{Name: name, Path: "/run/netns/" + name}
}

func deletePod(t *testing.T, p *netnstest.NS) {
	if out, err := exec.Command("ip", "netns", "delete", p.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns delete %s: %v: %s", p.Name, err, out)
	}
}

// attachedPod is a pod whose ADD succeeded.
type attachedPod struct {
	id    string
	pod   *netnstest.NS
	addrs []string
}

// add attaches a pod, killing at random; on success it checks that no live
// attachment holds one of the addresses and that each is reserved on disk
// for this one (host-local). It fails the test when an ADD fails without a
// kill.
func (r *killRig) add(id string, pod *netnstest.NS, kill bool) *attachedPod {
	res, killed, err := r.run(verbAdd, r.rt(id, pod.Path), kill)
	if err != nil {
		if killed != "" {
			r.stats.addsKilled.Add(1)
		} else {
			r.t.Errorf("ADD %s failed without a kill: %v", id, err)
		}
		return nil
	}
	r.stats.adds.Add(1)
	out, err := current.NewResultFromResult(res)
	if err != nil {
		r.t.Errorf("ADD %s: %v", id, err)
		return nil
	}
	a := &attachedPod{id: id, pod: pod}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ip := range out.IPs {
		addr := ip.Address.IP.String()
		if holder, taken := r.live[addr]; taken {
			r.t.Errorf("%s given to %s while the live %s holds it", addr, id, holder)
		}
		if !r.chain.dhcp {
			if rec, err := os.ReadFile(filepath.Join(r.dataDir, killNet, addr)); err != nil || string(rec) != id+"\r\neth0" {
				r.t.Errorf("reservation of %s for %s reads %q, %v", addr, id, rec, err)
			}
		}
		r.live[addr] = id
		a.addrs = append(a.addrs, addr)
	}
	return a
}

// del detaches: the attachment stops being live before its DEL begins. A
// DEL killed is retried, as the runtime does, until one succeeds (killed
// again at random, up to three times); a DEL that fails without a kill
// fails the test.
func (r *killRig) del(a *attachedPod, kill bool) {
	r.mu.Lock()
	for _, addr := range a.addrs {
		delete(r.live, addr)
	}
	r.mu.Unlock()
	for try := 0; ; try++ {
		_, killed, err := r.run(verbDel, r.rt(a.id, a.pod.Path), kill && try < 3)
		switch {
		case err == nil:
			r.stats.dels.Add(1)
			r.expectEmptyPod(a)
			return
		case killed == "":
			r.t.Errorf("DEL %s failed without a kill: %v", a.id, err)
			return
		}
		r.stats.delsKilled.Add(1)
	}
}

// expectEmptyPod checks that the pod of an attachment whose DEL succeeded
// holds nothing of it: loopback alone.
func (r *killRig) expectEmptyPod(a *attachedPod) {
	if links, err := a.pod.TryLinks(); err != nil || !slices.Equal(links, []string{"lo"}) {
		r.mu.Lock()
		calls := r.history[a.id]
		r.mu.Unlock()
		r.t.Errorf("after the DEL of %s its pod holds %v (%v); its calls: %v", a.id, links, err, calls)
	}
}

// newDevice makes the tap host-device lends the attachment id (a tap goes
// with a deleted namespace, as every virtual link does, instead of coming
// back to the machine's namespace as a physical device would).
func (r *killRig) newDevice(id string) bool {
	if !r.chain.devices {
		return true
	}
	if out, err := r.node.Try("ip", "tuntap", "add", killDevice(id), "mode", "tap"); err != nil {
		r.t.Errorf("making the device of %s: %v: %s", id, err, out)
		return false
	}
	return true
}

// cycle is one pod's life as a runtime that crashes now and then lives it:
// ADD, maybe killed. After a killed ADD the runtime DELs (retrying while
// killed) and maybe ADDs again into the same namespace (the spec forbids a
// second ADD without a DEL between: host-local refuses it, as the
// reference's does), or forgets the pod for GC to clean. A live pod is
// DELed (retried while killed); then its namespace goes.
func (r *killRig) cycle(id string) {
	pod := newPod(r.t)
	if pod == nil {
		return
	}
	defer deletePod(r.t, pod)
	if !r.newDevice(id) {
		return
	}
	a := r.add(id, pod, true)
	if a == nil {
		if rand.IntN(4) == 0 {
			r.mu.Lock()
			r.forgotten = append(r.forgotten, id)
			r.mu.Unlock()
			return
		}
		r.del(&attachedPod{id: id, pod: pod}, true)
		if rand.IntN(2) == 0 {
			return
		}
		r.stats.reAdds.Add(1)
		if a = r.add(id, pod, false); a == nil {
			return
		}
	}
	r.del(a, true)
}

// TestKillSafety: for each chain, ADD/DEL cycles, 8 at a time, through
// libcni while one of the operation's processes (the plugin or a delegate)
// is killed with SIGKILL at a random moment of a third of the calls; each
// worker then leaves one pod attached. A pod holds nothing but loopback
// once its DEL succeeded. Before GC, only live and forgotten attachments
// may hold anything: what a DEL retried after kills left is a leak. After a
// GC with the true valid list exactly the live pods hold addresses (host-
// local's, or the DHCP server's and daemon's leases), index entries, links,
// rules and saved configurations, every device host-device lent another
// pod is back on the node under its name, no file is half written, no
// address was ever given to two live attachments; their DEL then leaves
// nothing at all.
func TestKillSafety(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	if testing.Short() {
		t.Skip("runs many pods")
	}
	for _, chain := range killChains {
		t.Run(chain.name, func(t *testing.T) {
			if strings.Contains(chain.name, "nftables") {
				if _, err := exec.LookPath("nft"); err != nil {
					t.Skip("needs nft (make deps installs nftables)")
				}
			}
			killRun(t, newKillRig(t, chain))
		})
	}
}

func killRun(t *testing.T, r *killRig) {
	cycles, start := killCycles(t), time.Now()
	var wg sync.WaitGroup
	for w := range killWorkers {
		wg.Go(func() {
			for n := w; n < cycles && !t.Failed(); n += killWorkers {
				r.cycle(fmt.Sprintf("kill-%d", n))
			}
		})
	}
	wg.Wait()
	live := r.settle(t)
	t.Logf("%d cycles in %v: %d ADDs done, %d killed, %d retried; %d DELs done, %d killed; %s; %d forgotten for GC; %d addresses reclaimed",
		cycles, time.Since(start).Round(time.Millisecond), r.stats.adds.Load(), r.stats.addsKilled.Load(), r.stats.reAdds.Load(),
		r.stats.dels.Load(), r.stats.delsKilled.Load(), r.victims(), len(r.forgotten), r.reclaimed())
	if t.Failed() {
		return
	}
	r.expectIndexed(t, live)
	r.expectWithin(t, live)
	valid := make([]types.GCAttachment, len(live))
	for i, a := range live {
		valid[i] = types.GCAttachment{ContainerID: a.id, IfName: "eth0"}
	}
	list, err := r.list("")
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(r.node.Path, func() error {
		return r.cni.GCNetworkList(context.Background(), list, &libcni.GCArgs{ValidAttachments: valid})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	r.expectOnly(t, live)
	r.delAll(live)
	r.expectOnly(t, nil)
}

// delAll DELs the live attachments, without kills, at the same time, and
// deletes their pods.
func (r *killRig) delAll(live []*attachedPod) {
	var wg sync.WaitGroup
	for _, a := range live {
		wg.Go(func() {
			r.del(a, false)
			deletePod(r.t, a.pod)
		})
	}
	wg.Wait()
}

func (r *killRig) victims() string {
	var parts []string
	r.stats.victims.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%s killed %d times", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// reclaimed counts the addresses host-local took back from gone pods, from
// its log lines.
func (r *killRig) reclaimed() int {
	return strings.Count(r.stderr.String(), "reclaimed the address of an attachment that is gone")
}

// expectIndexed checks, before GC rebuilds anything, that the index the
// kills left behind finds every live attachment's addresses: a missing
// entry would make their DEL leak.
func (r *killRig) expectIndexed(t *testing.T, live []*attachedPod) {
	t.Helper()
	if r.chain.dhcp {
		return
	}
	s, err := disk.Open(r.dataDir, killNet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, a := range live {
		got, err := s.ByOwner(ipam.Owner{ContainerID: a.id, IfName: "eth0"})
		var addrs []string
		for _, g := range got {
			addrs = append(addrs, g.String())
		}
		if err != nil || !sameSet(addrs, a.addrs) {
			t.Errorf("the index gives %s %v (%v), want %v", a.id, addrs, err, a.addrs)
		}
	}
}

// settle leaves one attached pod per worker, added without kills, the
// workers' ADDs at the same time.
func (r *killRig) settle(t *testing.T) []*attachedPod {
	live := make([]*attachedPod, killWorkers)
	var wg sync.WaitGroup
	for w := range killWorkers {
		wg.Go(func() {
			pod := newPod(t)
			if pod == nil {
				return
			}
			t.Cleanup(func() { exec.Command("ip", "netns", "delete", pod.Name).Run() })
			if id := fmt.Sprintf("kill-live-%d", w); r.newDevice(id) {
				live[w] = r.add(id, pod, false)
			}
		})
	}
	wg.Wait()
	if slices.Contains(live, nil) {
		t.FailNow() // what failed said why
	}
	return live
}

// named lists the container IDs of this test that the node's state names:
// reservations, rules (the firewall's included), saved flannel
// configurations, tuning's saved values (a half-written one too: its
// temporary name holds the ID), bandwidth's ifbs, libcni's cache, and the
// DHCP server's and daemon's leases.
func (r *killRig) named(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{"reservations": holders(t, r.dataDir, killNet)}
	out["iptables rules"] = killID.FindAllString(r.node.Run(t, "iptables-save")+r.node.Run(t, "ip6tables-save"), -1)
	out["nft rules"] = killID.FindAllString(r.portmapTables(t), -1)
	out["flannel configs"] = killID.FindAllString(strings.Join(r.savedFiles(t, "flannel"), " "), -1)
	out["tuning saves"] = killID.FindAllString(strings.Join(r.savedFiles(t, "tuning"), " "), -1)
	// bandwidth's ifb names are hashes; the alias it gives each names the container.
	out["ifbs"] = killID.FindAllString(r.node.Run(t, "ip", "-d", "link", "show", "type", "ifb"), -1)
	out["libcni cache"] = killID.FindAllString(strings.Join(dirNames(t, filepath.Join(r.state, "cache", "results")), " "), -1)
	if r.chain.dhcp {
		out["server leases"] = r.serverLeases(t)
		out["daemon leases"] = r.daemonLeases(t)
	}
	for k, ids := range out {
		out[k] = slices.Compact(slices.Sorted(slices.Values(ids)))
	}
	return out
}

// serverLeases names the holders of dnsmasq's leases by the client ID the
// daemon sends (type 0, then "<container ID>/<network>/<ifname>"); a lease
// without one is named by its address, which no attachment allows.
func (r *killRig) serverLeases(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(r.lab.LeaseFile())
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line) // expiry, MAC, address, host name, client ID
		if len(f) < 5 {
			continue
		}
		id, err := hex.DecodeString(strings.ReplaceAll(f[4], ":", ""))
		holder := killID.FindString(string(id))
		if err != nil || holder == "" {
			holder = "the holder of " + f[2]
		}
		out = append(out, holder)
	}
	return out
}

// awaitServerLeases waits until ok accepts the holders of dnsmasq's
// leases: the RELEASE the daemon sent on DEL or GC reaches dnsmasq's file a
// moment after the call returned.
func (r *killRig) awaitServerLeases(t *testing.T, ok func(holders []string) bool) {
	t.Helper()
	if !r.chain.dhcp {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); !ok(r.serverLeases(t)) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
}

// daemonLeases names the attachments whose lease the DHCP daemon saved
// (it saves every lease it holds, and removes the file when it drops one).
func (r *killRig) daemonLeases(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(r.lab.Dir, "state")
	var out []string
	for _, name := range dirNames(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		var rec struct {
			ContainerID string `json:"containerID"`
		}
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil || rec.ContainerID == "" {
			t.Errorf("the daemon's state holds %s, not a lease record: %v", name, err)
			continue
		}
		out = append(out, rec.ContainerID)
	}
	return out
}

// portmapTables is the text of portmap's nft tables (iptables' own show in
// nft's ruleset too, as tables ip nat and the like).
func (r *killRig) portmapTables(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		return ""
	}
	var out []string
	for _, table := range strings.Split(r.node.Run(t, "nft", "list", "ruleset"), "\ntable ") {
		if head, _, _ := strings.Cut(table, "\n"); strings.Contains(head, "cni_hostport") {
			out = append(out, table)
		}
	}
	return strings.Join(out, "\n")
}

// savedFiles lists the dataDir of a plugin that saves a file per attachment
// (flannel, tuning) but for the half-written saves of forgotten pods that are
// younger than regfile.StaleTemp: GC leaves those to a later GC, by design, since it
// cannot tell them from a save in progress (the DEL of the attachment
// removes its own at once).
func (r *killRig) savedFiles(t *testing.T, plugin string) []string {
	t.Helper()
	dir := filepath.Join(r.state, plugin)
	var out []string
	for _, name := range dirNames(t, dir) {
		info, err := os.Stat(filepath.Join(dir, name))
		if strings.HasPrefix(name, ".") && slices.Contains(r.forgotten, killID.FindString(name)) && err == nil && time.Since(info.ModTime()) < regfile.StaleTemp {
			t.Logf("left to a later GC: %s, %v old", name, time.Since(info.ModTime()).Round(time.Second))
			continue
		}
		out = append(out, name)
	}
	return out
}

// logLines logs the lines of text that name id.
func (r *killRig) logLines(t *testing.T, id, text string) {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(id) + `\b`)
	for _, line := range strings.Split(text, "\n") {
		if re.MatchString(line) {
			t.Log(line)
		}
	}
}

// expectWithin checks, before GC, that only live attachments and those a
// runtime forgot hold anything: every DEL that succeeded, after any number
// of kills, left nothing of its attachment.
func (r *killRig) expectWithin(t *testing.T, live []*attachedPod) {
	t.Helper()
	allowed := slices.Clone(r.forgotten)
	for _, a := range live {
		allowed = append(allowed, a.id)
	}
	r.awaitServerLeases(t, func(holders []string) bool {
		return !slices.ContainsFunc(holders, func(id string) bool { return !slices.Contains(allowed, id) })
	})
	r.expectDevices(t, live)
	for what, ids := range r.named(t) {
		for _, id := range ids {
			if !slices.Contains(allowed, id) {
				t.Errorf("%s name %s, whose DEL succeeded; its calls: %v", what, id, r.history[id])
				switch what {
				case "iptables rules":
					r.logLines(t, id, r.node.Run(t, "iptables-save")+r.node.Run(t, "ip6tables-save"))
				case "server leases", "daemon leases":
					r.logLines(t, id, r.lab.Logs.String())
				}
			}
		}
	}
}

// expectOnly checks that the node and the plugins' files hold exactly what
// the live attachments need: their records and index entries, one veth
// each (bridge chains), rules naming them (chains with rules), a saved
// configuration each (flannel), and nothing else, half-written files and
// per-attachment chains of attachments gone included.
func (r *killRig) expectOnly(t *testing.T, live []*attachedPod) {
	t.Helper()
	var wantAddrs, wantIDs []string
	for _, a := range live {
		wantAddrs = append(wantAddrs, a.addrs...)
		wantIDs = append(wantIDs, a.id)
	}
	want := map[string][]string{"reservations": wantIDs, "libcni cache": wantIDs, "iptables rules": nil, "nft rules": nil, "flannel configs": nil, "tuning saves": nil, "ifbs": nil}
	if r.chain.dhcp {
		want["reservations"], want["server leases"], want["daemon leases"] = nil, wantIDs, wantIDs
		r.awaitServerLeases(t, func(holders []string) bool { return sameSet(holders, wantIDs) })
	} else {
		r.expectReservations(t, wantAddrs, len(live))
	}
	if r.chain.iptables {
		want["iptables rules"] = wantIDs
	}
	if r.chain.nft {
		want["nft rules"] = wantIDs
	}
	if r.chain.flannel {
		want["flannel configs"] = wantIDs
	}
	if r.chain.tuning {
		want["tuning saves"] = wantIDs
	}
	if r.chain.ifbs {
		want["ifbs"] = wantIDs
	}
	for what, ids := range r.named(t) {
		if !sameSet(ids, want[what]) {
			t.Errorf("%s name %v, want %v", what, ids, want[what])
		}
	}
	r.expectNoHalfWritten(t)
	r.expectLinks(t, len(live))
	r.expectDevices(t, live)
	if len(live) == 0 {
		for _, save := range []string{"iptables-save", "ip6tables-save"} {
			if chains := attachmentChain.FindAllString(r.node.Run(t, save), -1); len(chains) > 0 {
				t.Errorf("%s: per-attachment chains left: %v", save, slices.Compact(slices.Sorted(slices.Values(chains))))
			}
		}
	}
}

// expectReservations checks host-local's records and index.
func (r *killRig) expectReservations(t *testing.T, addrs []string, attachments int) {
	t.Helper()
	if got := reservations(t, r.dataDir, killNet); !sameSet(got, addrs) {
		t.Errorf("reservations %v, want %v", got, addrs)
	}
	if n := indexEntries(t, r.dataDir, killNet); n != attachments {
		t.Errorf("%d attachments indexed, want %d", n, attachments)
	}
}

func (r *killRig) expectNoHalfWritten(t *testing.T) {
	t.Helper()
	net := filepath.Join(r.dataDir, killNet)
	for _, dir := range []string{net, filepath.Join(net, ".cnisuite"), filepath.Join(net, ".cnisuite", "owners")} {
		for _, name := range dirNames(t, dir) {
			if strings.HasPrefix(name, ".reserve-") || strings.HasPrefix(name, ".tmp-") {
				t.Errorf("half-written file left: %s", filepath.Join(dir, name))
			}
		}
	}
	// flannel's and tuning's saves are written as .<name>.<digits> first.
	for _, plugin := range []string{"flannel", "tuning"} {
		for _, name := range r.savedFiles(t, plugin) {
			if strings.HasPrefix(name, ".") {
				t.Errorf("half-written %s save left: %s", plugin, name)
			}
		}
	}
}

// expectLinks checks the node's links: one veth per live attachment on a
// bridge chain, and no veth or macvlan at all otherwise (the uplink
// killul0 aside).
func (r *killRig) expectLinks(t *testing.T, live int) {
	t.Helper()
	want := map[string]int{"veth": 0, "macvlan": 0, "ifb": 0}
	if r.chain.veths {
		want["veth"] = live
	}
	if r.chain.ifbs {
		want["ifb"] = live
	}
	for typ, n := range want {
		links := slices.DeleteFunc(r.node.Links(t, "type", typ), func(name string) bool { return name == "killul0" })
		if len(links) != n {
			t.Errorf("%d %s links on the node, want %d: %v", len(links), typ, n, links)
		}
	}
}

// expectDevices checks host-device's taps: each is on the node under its
// name and without the alias that named it inside a pod, but a live
// attachment's, which its pod holds, and a forgotten pod's, which may have
// gone with the pod's namespace (lent when the kill came). The node holds
// no tap of another name.
func (r *killRig) expectDevices(t *testing.T, live []*attachedPod) {
	t.Helper()
	if !r.chain.devices {
		return
	}
	onNode := map[string]bool{}
	for line := range strings.Lines(r.node.Run(t, "ip", "-o", "link", "show", "type", "tun")) {
		names := netnstest.LinkNames(line)
		if len(names) == 0 {
			continue
		}
		onNode[names[0]] = true
		if strings.Contains(line, " alias ") {
			t.Errorf("device %s is back on the node with its alias: %s", names[0], line)
		}
	}
	for id, calls := range r.history {
		dev := killDevice(id)
		lent := slices.ContainsFunc(live, func(a *attachedPod) bool { return a.id == id })
		switch {
		case lent && onNode[dev]:
			t.Errorf("device %s of the live %s is on the node", dev, id)
		case !lent && !onNode[dev] && !slices.Contains(r.forgotten, id):
			t.Errorf("device %s of %s is not back on the node; its calls: %v", dev, id, calls)
		}
		delete(onNode, dev)
	}
	if len(onNode) > 0 {
		t.Errorf("taps on the node that no attachment was lent: %v", slices.Sorted(maps.Keys(onNode)))
	}
}
