package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// killCycles is how many ADD/DEL cycles TestKillSafety runs: the issue's
// 300 (about 8 s on a two-core machine), or CNI_KILL_CYCLES to soak longer.
func killCycles(t *testing.T) int {
	t.Helper()
	if s := os.Getenv("CNI_KILL_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 8 {
			t.Fatalf("CNI_KILL_CYCLES=%q: want a number of cycles, at least 8", s)
		}
		return n
	}
	return 300
}

const killWorkers = 8

// killID matches the container IDs TestKillSafety gives its pods.
var killID = regexp.MustCompile(`kill-(?:live-)?[0-9]+`)

// killRig runs bridge + host-local binaries, copied to a directory of their
// own so that the killer can tell them from every other process, inside a
// node namespace.
type killRig struct {
	t       *testing.T
	node    *netnstest.NS
	bin     string
	dataDir string
	conf    []byte

	mu    sync.Mutex
	live  map[string]string // address -> container ID, for attachments whose ADD succeeded and DEL has not begun
	stats killStats
	// orphaned holds the pids of bridge processes whose host-local child was
	// killed: their call failed because of a kill, whatever it printed.
	orphaned sync.Map
}

type killStats struct {
	adds, addsKilled, dels, delsKilled, childKills, reclaims atomic.Int64
}

func newKillRig(t *testing.T) *killRig {
	r := &killRig{t: t, node: netnstest.New(t, "cni-kill-node"), bin: t.TempDir(), dataDir: t.TempDir(), live: map[string]string{}}
	for _, p := range []string{"bridge", "host-local"} {
		data, err := os.ReadFile(filepath.Join(binDir, p))
		if err == nil {
			err = os.WriteFile(filepath.Join(r.bin, p), data, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// 32 addresses per family: with 8 pods in flight and the leaks of killed
	// ADDs, the range fills up and ADD has to reclaim.
	r.conf = jsonConf(t, map[string]any{
		"cniVersion": "1.1.0", "name": "killnet", "type": "bridge", "bridge": "killbr0",
		"isGateway": true, "ipMasq": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": r.dataDir, "ranges": []any{
			[]any{map[string]any{"subnet": "10.78.0.0/24", "rangeStart": "10.78.0.10", "rangeEnd": "10.78.0.41"}},
			[]any{map[string]any{"subnet": "fd00:78::/64", "rangeStart": "fd00:78::10", "rangeEnd": "fd00:78::2f"}},
		}},
	})
	return r
}

// call runs bridge with one verb inside the node, killing it with SIGKILL
// after killAfter when that is positive. killed reports a SIGKILL of bridge
// or of the host-local it ran.
func (r *killRig) call(verb, id, netnsPath string, stdin []byte, killAfter time.Duration) (out []byte, killed bool, err error) {
	cmd := exec.Command(filepath.Join(r.bin, "bridge"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + id,
		"CNI_NETNS=" + netnsPath, "CNI_IFNAME=eth0", "CNI_PATH=" + r.bin}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &stdout, &stderr
	if err := netns.Do(r.node.Path, cmd.Start); err != nil {
		return nil, false, err
	}
	if killAfter > 0 {
		timer := time.AfterFunc(killAfter, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	}
	err = cmd.Wait()
	_, childKilled := r.orphaned.LoadAndDelete(cmd.Process.Pid)
	r.stats.reclaims.Add(int64(strings.Count(stderr.String(), "reclaimed the address of an attachment that is gone")))
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws, _ := ee.Sys().(syscall.WaitStatus)
		if childKilled {
			r.stats.childKills.Add(1)
		}
		killed = (ws.Signaled() && ws.Signal() == syscall.SIGKILL) || childKilled
		err = fmt.Errorf("%s %s: %w: %s%s", verb, id, err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), killed, err
}

// maybeKill picks whether and when to kill bridge: a third of the calls, at
// a random moment of the first 30 ms (an ADD takes 20-60 ms here).
func maybeKill() time.Duration {
	if rand.IntN(3) != 0 {
		return 0
	}
	return time.Duration(1+rand.IntN(30_000)) * time.Microsecond
}

// killHostLocal kills host-local processes at random moments until stop
// closes: it looks for processes running this rig's copy of the binary, and
// signals one through a pidfd opened before checking that it is still that
// binary, so that a recycled pid is never hit.
func (r *killRig) killHostLocal(stop <-chan struct{}) {
	exe := filepath.Join(r.bin, "host-local")
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(rand.IntN(20_000)) * time.Microsecond):
		}
		pids := processesOf(exe)
		if len(pids) == 0 || rand.IntN(3) != 0 {
			continue
		}
		pid := pids[rand.IntN(len(pids))]
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if ppid := parentOf(pid); err == nil && target == exe && ppid > 0 {
			r.orphaned.Store(ppid, true) // before the kill: its bridge may be reaped at once
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		}
		unix.Close(fd)
	}
}

// parentOf reads a process's parent pid from /proc/<pid>/stat; 0 if gone.
func parentOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid ...": comm may hold spaces, so cut at the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// processesOf lists the pids whose executable is exe.
func processesOf(exe string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && target == exe {
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

// add attaches a new pod, killing at random; on success it checks that no
// live attachment holds one of the addresses and that each is reserved on
// disk for this one.
func (r *killRig) add(id string, pod *netnstest.NS, kill bool) (*attachedPod, bool) {
	killAfter := time.Duration(0)
	if kill {
		killAfter = maybeKill()
	}
	out, killed, err := r.call("ADD", id, pod.Path, r.conf, killAfter)
	if err != nil {
		if killed {
			r.stats.addsKilled.Add(1)
		} else {
			r.t.Errorf("ADD failed without a kill: %v", err)
		}
		return nil, false
	}
	r.stats.adds.Add(1)
	var res current.Result
	if err := json.Unmarshal(out, &res); err != nil {
		r.t.Errorf("ADD %s printed %s: %v", id, out, err)
		return nil, false
	}
	a := &attachedPod{id: id, pod: pod}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ip := range res.IPs {
		addr := ip.Address.IP.String()
		if holder, taken := r.live[addr]; taken {
			r.t.Errorf("%s given to %s while the live %s holds it", addr, id, holder)
		}
		if rec, err := os.ReadFile(filepath.Join(r.dataDir, "killnet", addr)); err != nil || string(rec) != id+"\r\neth0" {
			r.t.Errorf("reservation of %s for %s reads %q, %v", addr, id, rec, err)
		}
		r.live[addr] = id
		a.addrs = append(a.addrs, addr)
	}
	return a, true
}

// del detaches: the attachment stops being live before its DEL begins.
func (r *killRig) del(a *attachedPod, kill bool) bool {
	r.mu.Lock()
	for _, addr := range a.addrs {
		delete(r.live, addr)
	}
	r.mu.Unlock()
	killAfter := time.Duration(0)
	if kill {
		killAfter = maybeKill()
	}
	_, killed, err := r.call("DEL", a.id, a.pod.Path, r.conf, killAfter)
	if err != nil {
		if killed {
			r.stats.delsKilled.Add(1)
		} else {
			r.t.Errorf("DEL failed without a kill: %v", err)
		}
		return false
	}
	r.stats.dels.Add(1)
	return true
}

// cycle is one pod's life as a runtime that crashes now and then lives it:
// ADD (maybe killed: then DEL, maybe, or forget it), DEL (maybe killed:
// retried once, maybe), then the namespace goes.
func (r *killRig) cycle(id string) {
	pod := newPod(r.t)
	if pod == nil {
		return
	}
	defer deletePod(r.t, pod)
	a, ok := r.add(id, pod, true)
	switch {
	case !ok && rand.IntN(2) == 0:
		r.del(&attachedPod{id: id, pod: pod}, true)
	case ok && !r.del(a, true) && rand.IntN(2) == 0:
		r.del(a, true)
	}
}

// TestKillSafety: ADD/DEL cycles, 8 at a time, through the bridge and
// host-local binaries while both are killed with SIGKILL at random moments;
// each worker then leaves one pod attached and one GC runs with the true
// valid list. Afterwards exactly the live pods hold addresses, index
// entries, veths and nat rules, no file is half written, no address was
// ever given to two live attachments; their DEL then leaves nothing at all.
func TestKillSafety(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	if testing.Short() {
		t.Skip("runs many pods")
	}
	r := newKillRig(t)
	cycles, start := killCycles(t), time.Now()
	stop := make(chan struct{})
	var killer sync.WaitGroup
	killer.Go(func() { r.killHostLocal(stop) })
	var wg sync.WaitGroup
	for w := range killWorkers {
		wg.Go(func() {
			for n := w; n < cycles; n += killWorkers {
				r.cycle(fmt.Sprintf("kill-%d", n))
			}
		})
	}
	wg.Wait()
	close(stop)
	killer.Wait()
	live := r.settle(t)
	t.Logf("%d cycles in %v: %d ADDs done, %d killed; %d DELs done, %d killed; %d of the kills hit host-local; %d addresses reclaimed from gone pods",
		cycles, time.Since(start).Round(time.Millisecond), r.stats.adds.Load(), r.stats.addsKilled.Load(),
		r.stats.dels.Load(), r.stats.delsKilled.Load(), r.stats.childKills.Load(), r.stats.reclaims.Load())

	r.expectIndexed(t, live)
	valid := make([]any, len(live))
	for i, a := range live {
		valid[i] = map[string]any{"containerID": a.id, "ifname": "eth0"}
	}
	var gc map[string]any
	if err := json.Unmarshal(r.conf, &gc); err != nil {
		t.Fatal(err)
	}
	gc["cni.dev/valid-attachments"] = valid
	if _, _, err := r.call("GC", "", "", jsonConf(t, gc), 0); err != nil {
		t.Fatalf("GC: %v", err)
	}
	r.expectOnly(t, live)
	for _, a := range live {
		if !r.del(a, false) {
			t.Fatalf("DEL of %s failed", a.id)
		}
		deletePod(t, a.pod)
	}
	r.expectOnly(t, nil)
}

// expectIndexed checks, before GC rebuilds anything, that the index the
// kills left behind finds every live attachment's addresses: a missing
// entry would make their DEL leak.
func (r *killRig) expectIndexed(t *testing.T, live []*attachedPod) {
	t.Helper()
	s, err := disk.Open(r.dataDir, "killnet")
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

// settle leaves one attached pod per worker, added without kills.
func (r *killRig) settle(t *testing.T) []*attachedPod {
	var live []*attachedPod
	for w := range killWorkers {
		pod := newPod(t)
		if pod == nil {
			t.FailNow()
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", pod.Name).Run() })
		a, ok := r.add(fmt.Sprintf("kill-live-%d", w), pod, false)
		if !ok {
			t.FailNow()
		}
		live = append(live, a)
	}
	return live
}

// expectOnly checks that the node and host-local's files hold exactly what
// the live attachments need: their records and index entries, one veth
// each, nat rules naming them, and nothing else, half-written files included.
func (r *killRig) expectOnly(t *testing.T, live []*attachedPod) {
	t.Helper()
	var wantAddrs, wantIDs []string
	for _, a := range live {
		wantAddrs = append(wantAddrs, a.addrs...)
		wantIDs = append(wantIDs, a.id)
	}
	if got := reservations(t, r.dataDir, "killnet"); !sameSet(got, wantAddrs) {
		t.Errorf("reservations %v, want %v", got, wantAddrs)
	}
	if got := holders(t, r.dataDir, "killnet"); !sameSet(slices.Compact(slices.Sorted(slices.Values(got))), wantIDs) {
		t.Errorf("reservations held by %v, want %v", got, wantIDs)
	}
	if n := indexEntries(t, r.dataDir, "killnet"); n != len(live) {
		t.Errorf("%d attachments indexed, want %d", n, len(live))
	}
	net := filepath.Join(r.dataDir, "killnet")
	for _, dir := range []string{net, filepath.Join(net, ".cnisuite"), filepath.Join(net, ".cnisuite", "owners")} {
		for _, name := range dirNames(t, dir) {
			if strings.HasPrefix(name, ".reserve-") || strings.HasPrefix(name, ".tmp-") {
				t.Errorf("half-written file left: %s", filepath.Join(dir, name))
			}
		}
	}
	if veths := linkNames(r.node.Run(t, "ip", "-o", "link", "show", "type", "veth")); len(veths) != len(live) {
		t.Errorf("%d veths on the node, want %d: %v", len(veths), len(live), veths)
	}
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		var named []string
		for _, id := range killID.FindAllString(r.node.Run(t, save, "-t", "nat"), -1) {
			if !slices.Contains(named, id) {
				named = append(named, id)
			}
		}
		if !sameSet(named, wantIDs) {
			t.Errorf("%s: rules name %v, want %v", save, named, wantIDs)
		}
	}
}
