package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cnisuite/cni/bench/labkit"
	"github.com/cnisuite/cni/internal/proc"
)

// The lease daemons' bench (issue 5): subnetd against flanneld, each alone on
// a node namespace joined to an underlay namespace where an etcd server
// process runs. Peers are leases the bench puts into etcd; their public
// addresses need not exist, since only the programming is measured.
const (
	ulAddr     = "192.168.78.1" // the underlay's bridge and etcd
	nodeAddr   = "192.168.78.10"
	etcdURL    = "http://" + ulAddr + ":2379"
	deadURL    = "http://192.168.78.254:2379" // on the underlay, nobody there
	netConfig  = `{"Network":"10.0.0.0/8","SubnetLen":24,"SubnetMin":"10.0.0.0","SubnetMax":"10.0.255.0","Backend":{"Type":"vxlan"}}`
	eventPause = 20 * time.Millisecond // between lease events, so that each is measured alone
)

// daemon is one lease daemon under test.
type daemon struct {
	name string // "flanneld" or "subnetd"
	bin  string
}

// argv is how a node runs the daemon against endpoint under prefix.
func (d daemon) argv(endpoint, prefix, dir string) []string {
	env := filepath.Join(dir, "subnet.env")
	if d.name == "flanneld" {
		return []string{d.bin, "--etcd-endpoints", endpoint, "--etcd-prefix", prefix, "--iface", "eth0", "--subnet-file", env}
	}
	return []string{d.bin, "--etcd-endpoints", endpoint, "--etcd-prefix", prefix, "--iface", "eth0",
		"--subnet-file", env, "--data-dir", dir, "--node-id", filepath.Base(dir), "--etcd-timeout", "1s",
		"--log-level", "debug"} // its per-event timings; logged after the writes they time
}

// daemonFigures is what one daemon measured.
type daemonFigures struct {
	disk, tmpfs eventFigures // new leases with etcd's data on disk, and on tmpfs
	full        []float64    // s from start to every peer's entries, per peerCounts
	rssKiB      float64      // VmRSS with the event phase's peers
	hwmKiB      float64      // VmHWM after the largest full programming
	renewals    float64      // route/neigh/FDB notifications while every peer renewed
	firstErr    float64      // s to the first error line with etcd unreachable; NaN: none
}

// eventFigures times each new lease, in ms: from the start of its put to its
// three entries (event), to the put's return (put: etcd's commit), and from
// a bystander client's watch event (the commit as any client first sees it)
// to the entries (share: the daemon's part, its own watch delivery included).
// subnetd's own log adds: callback, from the bystander's event to subnetd's
// watch callback; decode, from there to the peers decoded (the hand-over to
// its loop included); program, from there to its writes done (plan and the
// netlink writes); notify, from there to the bench's last notification.
type eventFigures struct {
	event, put, seen, share           []float64
	callback, decode, program, notify []float64
}

// daemonBench measures both daemons and returns their table rows; a daemon
// that cannot be built or run gives a row saying why.
func daemonBench(ctx context.Context, cfg config, work string) []row {
	const scen = "subnetd vs flanneld"
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return []row{{scenario: scen, metric: "not run: needs etcd (Debian's etcd-server)", status: "skipped"}}
	}
	pair, err := buildDaemons(ctx, cfg, filepath.Join(work, "daemons"))
	if err != nil {
		return []row{{scenario: scen, metric: firstLine(err), status: "FAILED"}}
	}
	var figs [2]daemonFigures
	for k, d := range pair {
		if d.bin == "" {
			figs[k] = emptyFigures(len(cfg.peerCounts))
			continue
		}
		slog.Info("lease daemon", "name", d.name, "events", cfg.leaseEvents, "peers", cfg.peerCounts)
		if figs[k], err = measureDaemon(ctx, cfg, d, etcdBin, filepath.Join(work, fmt.Sprintf("d%d-%s", k, d.name))); err != nil {
			return []row{{scenario: scen, metric: d.name + ": " + firstLine(err), status: "FAILED"}}
		}
		breakdown(d.name, figs[k])
	}
	return daemonRows(scen, cfg, figs)
}

// buildDaemons builds flanneld (the reference) and subnetd; with no
// flanneld version, subnetd is on both sides (the smoke tests). A flanneld
// that cannot be built leaves the reference's bin empty, and its cells.
func buildDaemons(ctx context.Context, cfg config, dir string) ([2]daemon, error) {
	ours, err := buildSubnetd(ctx, cfg.repo, dir)
	if err != nil {
		return [2]daemon{}, err
	}
	ref := ours
	if cfg.flannelVersion != "" {
		slog.Info("building flanneld", "version", cfg.flannelVersion)
		if ref.bin, err = buildFlanneld(ctx, cfg.flannelVersion, dir); err != nil {
			slog.Warn("flanneld cannot be built; its side stays empty", "err", err)
			ref = daemon{}
		}
		ref.name = "flanneld"
	}
	return [2]daemon{ref, ours}, nil
}

func emptyFigures(n int) daemonFigures {
	nan := math.NaN()
	f := daemonFigures{rssKiB: nan, hwmKiB: nan, renewals: nan, firstErr: nan}
	for range n {
		f.full = append(f.full, nan)
	}
	return f
}

func firstLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return msg
}

// daemonRows are the figures; its targets bound ours, not ratios.
// The new-lease target is judged twice: from the put's start (the clock of
// the flanneld figure, etcd's commit included) and from the commit
// as a bystander client's watch sees it (what the daemon adds).
func daemonRows(scen string, cfg config, f [2]daemonFigures) []row {
	abs := func(metric string, prec int, ref, ours stat, target float64) row {
		return row{scenario: scen, metric: metric, prec: prec, ref: ref, ours: ours, target: target, absolute: target != 0}
	}
	ev := func(metric string, get func(eventFigures) []float64, target float64) row {
		return abs(metric, 2, summarize(get(f[0].disk)), summarize(get(f[1].disk)), target)
	}
	tmp := func(metric string, get func(eventFigures) []float64) row {
		return abs(metric, 2, summarize(get(f[0].tmpfs)), summarize(get(f[1].tmpfs)), 0)
	}
	rows := []row{
		ev(fmt.Sprintf("new lease → route+neigh+FDB ms, from the put's start (%d events)", len(f[1].disk.event)),
			func(e eventFigures) []float64 { return e.event }, 2),
		ev("of which the put returning (etcd's commit, WAL fsync on disk), ms", func(e eventFigures) []float64 { return e.put }, 0),
		ev("new lease → entries ms, from the commit (a bystander's watch event)", func(e eventFigures) []float64 { return e.share }, 2),
		tmp("etcd's data on tmpfs: new lease → entries ms, from the put's start", func(e eventFigures) []float64 { return e.event }),
		tmp("etcd's data on tmpfs: of which the put returning, ms", func(e eventFigures) []float64 { return e.put }),
		tmp("etcd's data on tmpfs: from the commit (a bystander's watch event), ms", func(e eventFigures) []float64 { return e.share }),
	}
	for i, n := range cfg.peerCounts {
		target := map[int]float64{1000: 0.4, 2000: 0.6}[n]
		rows = append(rows, abs(fmt.Sprintf("start → %d peers programmed, s", n), 2, single(f[0].full[i]), single(f[1].full[i]), target))
	}
	mb := func(kib float64) stat { return single(kib * 1024 / 1e6) }
	rows = append(rows,
		abs("RSS (VmRSS) with few peers, MB", 1, mb(f[0].rssKiB), mb(f[1].rssKiB), 22),
		abs("peak RSS (VmHWM) after the largest start, MB", 1, mb(f[0].hwmKiB), mb(f[1].hwmKiB), 0),
		abs("etcd unreachable: first error line, s", 2, single(f[0].firstErr), single(f[1].firstErr), 1))
	renew := abs("netlink notifications while every peer renews", 0, single(f[0].renewals), single(f[1].renewals), 0)
	renew.target, renew.absolute = 0.5, true // "none": any write misses it
	return append(rows, renew)
}

// breakdown prints where a daemon's new-lease time goes, medians in ms.
func breakdown(name string, f daemonFigures) {
	med := func(v []float64) float64 { return summarize(v).med }
	for _, e := range []struct {
		where string
		f     eventFigures
	}{{"disk", f.disk}, {"tmpfs", f.tmpfs}} {
		fmt.Printf("%s, etcd on %s: put %.3f | bystander's watch event %.3f | entries %.3f (%.3f after the event)",
			name, e.where, med(e.f.put), med(e.f.seen), med(e.f.event), med(e.f.share))
		if len(e.f.callback) > 0 {
			fmt.Printf(" | after the event: callback %+.3f, decoded +%.3f, written +%.3f, notified +%.3f",
				med(e.f.callback), med(e.f.decode), med(e.f.program), med(e.f.notify))
		}
		fmt.Println()
	}
}

// buildSubnetd builds subnetd as the Makefile does: static, without gRPC's
// x/net/trace, and without the Kubernetes API mode, which it hands over to
// subnetd-kube, built next to it.
func buildSubnetd(ctx context.Context, repo, dir string) (daemon, error) {
	bin := filepath.Join(dir, "subnetd")
	for _, b := range []struct{ tags, out string }{{"grpcnotrace,nokube", bin}, {"grpcnotrace", bin + "-kube"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", b.tags, "-o", b.out, "./cmd/subnetd")
		cmd.Dir = repo
		cmd.Env = buildEnv()
		if err := runBuild(cmd, "building "+filepath.Base(b.out)); err != nil {
			return daemon{}, err
		}
	}
	return daemon{name: "subnetd", bin: bin}, nil
}

// flannelDropped is the one import removed from flanneld's main.go before
// building: the module proxy refuses the Tencent Cloud SDK version that only
// its Tencent VPC backend uses (see test/e2e/interop_test.go).
const flannelDropped = `_ "github.com/flannel-io/flannel/pkg/backend/tencentvpc"`

// buildFlanneld builds flanneld at version from the module proxy, without
// its Tencent VPC backend.
func buildFlanneld(ctx context.Context, version, dir string) (string, error) {
	dl := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/flannel-io/flannel@"+version)
	dl.Dir, dl.Env = os.TempDir(), buildEnv("GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := dl.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download flannel %s (needs the Go module proxy): %w %s", version, err, out)
	}
	_, rest, _ := strings.Cut(string(out), `"Dir": "`)
	modDir, _, _ := strings.Cut(rest, `"`)
	src := filepath.Join(dir, "flannel-src")
	if err := os.CopyFS(src, os.DirFS(modDir)); err != nil {
		return "", fmt.Errorf("copying flannel's source from %q: %w", modDir, err)
	}
	mainGo := filepath.Join(src, "main.go")
	code, err := os.ReadFile(mainGo)
	if err != nil || !strings.Contains(string(code), flannelDropped) {
		return "", fmt.Errorf("flannel %s main.go no longer imports the Tencent backend: %v", version, err)
	}
	if err := os.WriteFile(mainGo, []byte(strings.Replace(string(code), flannelDropped, "", 1)), 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "flanneld")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin,
		"-ldflags", "-X github.com/flannel-io/flannel/pkg/version.Version="+version, ".")
	// With cgo, as flannel's releases are: its UDP backend does not build without.
	cmd.Dir, cmd.Env = src, append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	return bin, runBuild(cmd, "building flanneld "+version)
}

// measureDaemon runs every phase for one daemon in a lab of its own, then
// the new leases again against an etcd whose data is on tmpfs.
func measureDaemon(ctx context.Context, cfg config, d daemon, etcdBin, dir string) (f daemonFigures, err error) {
	if err := withLab(ctx, etcdBin, dir, "", func(l *leaseLab) error { return allPhases(ctx, cfg, l, d, &f) }); err != nil {
		return f, err
	}
	shm, err := os.MkdirTemp("/dev/shm", "cnibench-etcd-")
	if err != nil {
		return f, fmt.Errorf("etcd on tmpfs: %w", err)
	}
	defer os.RemoveAll(shm)
	err = withLab(ctx, etcdBin, dir+"-tmpfs", shm, func(l *leaseLab) error {
		_, _, err := eventPhase(ctx, cfg, l, d, &f.tmpfs)
		return err
	})
	return f, err
}

// withLab runs fn in a new lab, etcd's data under etcdDir ("" its own dir).
func withLab(ctx context.Context, etcdBin, dir, etcdDir string, fn func(*leaseLab) error) (err error) {
	if etcdDir == "" {
		etcdDir = filepath.Join(dir, "etcd")
	}
	l, err := newLeaseLabAt(ctx, etcdBin, dir, etcdDir)
	defer func() { err = errors.Join(err, l.close()) }()
	if err != nil {
		return err
	}
	return fn(l)
}

func allPhases(ctx context.Context, cfg config, l *leaseLab, d daemon, f *daemonFigures) (err error) {
	if f.renewals, f.rssKiB, err = eventPhase(ctx, cfg, l, d, &f.disk); err != nil {
		return fmt.Errorf("new leases: %w", err)
	}
	for i, n := range cfg.peerCounts {
		s, hwm, err := fullPhase(ctx, l, d, i, n)
		if err != nil {
			return fmt.Errorf("start with %d peers: %w", n, err)
		}
		f.full, f.hwmKiB = append(f.full, s), hwm
	}
	f.firstErr, err = l.firstError(ctx, d, 5*time.Second)
	return err
}

// startDaemon runs d on a fresh node under prefix (its network config put
// first) and returns the node and the process.
func startDaemon(ctx context.Context, l *leaseLab, d daemon, prefix string) (*namespace, *exec.Cmd, error) {
	if err := l.put(ctx, prefix+"/config", netConfig); err != nil {
		return nil, nil, err
	}
	node, err := l.node(ctx)
	if err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(l.dir, node.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	cmd, err := l.spawn(node, d.name+"-"+node.name, io.Discard, d.argv(etcdURL, prefix, dir)...)
	return node, cmd, err
}

// eventPhase: with the daemon running and settled, put new peer leases one
// at a time and time each to its route, neighbour and FDB entry; then re-put
// every one unchanged (a renewal) and count the notifications that follow.
// It returns that count and the daemon's VmRSS before the renewals.
func eventPhase(ctx context.Context, cfg config, l *leaseLab, d daemon, f *eventFigures) (renewals, rss float64, err error) {
	prefix := "/bench/events"
	node, cmd, err := startDaemon(ctx, l, d, prefix)
	if err != nil {
		return 0, 0, err
	}
	env := filepath.Join(l.dir, node.name, "subnet.env")
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(env); err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			return 0, 0, fmt.Errorf("%s wrote no subnet.env within 20 s (log in %s)", d.name, l.dir)
		}
	}
	time.Sleep(500 * time.Millisecond) // the daemon's start-up writes settle
	t, err := labkit.Track(node.path)
	if err != nil {
		return 0, 0, err
	}
	defer t.Stop()
	b, err := l.watch(ctx, prefix+"/subnets/")
	if err != nil {
		return 0, 0, err
	}
	defer b.stop()
	var peers []labkit.Peer
	var seen, last []time.Time
	for i := range cfg.leaseEvents {
		p := labkit.PeerN(i)
		peers = append(peers, p)
		at, done, err := timeEvent(ctx, l, t, b, p, prefix, f)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", d.name, err)
		}
		seen, last = append(seen, at), append(last, done)
		time.Sleep(eventPause)
	}
	rss = labkit.ProcStatus(cmd.Process.Pid, "VmRSS")
	time.Sleep(time.Second)
	before := t.Notifications()
	for _, p := range peers {
		if err := l.put(ctx, leaseKey(p, prefix), leaseValue(p)); err != nil {
			return 0, 0, err
		}
	}
	time.Sleep(2 * time.Second)
	renewals = float64(t.Notifications() - before)
	proc.Stop(cmd, stopGrace)
	if d.name == "subnetd" {
		inside(filepath.Join(l.dir, d.name+"-"+node.name+".log"), seen, last, f)
	}
	return renewals, rss, nil
}

// timeEvent puts one new lease and records its times; it returns when the
// bystander saw it and when its last entry appeared.
func timeEvent(ctx context.Context, l *leaseLab, t *labkit.Tracker, b *bystander, p labkit.Peer, prefix string, f *eventFigures) (seen, last time.Time, err error) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	start := time.Now()
	if err := l.put(ctx, leaseKey(p, prefix), leaseValue(p)); err != nil {
		return seen, last, err
	}
	put := time.Since(start)
	last, ok := t.Programmed([]labkit.Peer{p}, start.Add(5*time.Second))
	if !ok {
		return seen, last, fmt.Errorf("lease %s not programmed within 5 s", p.Subnet)
	}
	if seen, ok = b.At(ctx, leaseKey(p, prefix), start.Add(5*time.Second)); !ok {
		return seen, last, fmt.Errorf("the bench's watch did not see lease %s within 5 s", p.Subnet)
	}
	f.event = append(f.event, ms(last.Sub(start)))
	f.put = append(f.put, ms(put))
	f.seen = append(f.seen, ms(seen.Sub(start)))
	f.share = append(f.share, ms(last.Sub(seen)))
	return seen, last, nil
}

// eventLine is subnetd's debug line after a watch event's writes.
var eventLine = regexp.MustCompile(`msg="peer event programmed" received_us=(\d+) decoded_us=(\d+) done_us=(\d+)`)

// inside reads subnetd's log for each event (seen: the bystander's watch
// event; last: the bench's last notification) into f. Each event is the
// first logged line received after its seen time minus 1 ms (the two
// watches race).
func inside(logFile string, seen, last []time.Time, f *eventFigures) {
	raw, err := os.ReadFile(logFile)
	if err != nil {
		return
	}
	var lines [][3]int64 // received, decoded, done, µs since the epoch
	for _, m := range eventLine.FindAllStringSubmatch(string(raw), -1) {
		var l [3]int64
		for i := range l {
			l[i], _ = strconv.ParseInt(m[i+1], 10, 64)
		}
		lines = append(lines, l)
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	for k, at := range seen {
		from := at.UnixMicro() - 1000
		i := slices.IndexFunc(lines, func(l [3]int64) bool { return l[0] >= from })
		if i < 0 {
			continue
		}
		l := lines[i]
		f.callback = append(f.callback, ms(l[0]-at.UnixMicro()))
		f.decode = append(f.decode, ms(l[1]-l[0]))
		f.program = append(f.program, ms(l[2]-l[1]))
		f.notify = append(f.notify, ms(last[k].UnixMicro()-l[2]))
	}
}

// fullPhase puts n peer leases, then starts the daemon on a fresh node and
// times it to the last of their entries; it returns seconds and VmHWM.
func fullPhase(ctx context.Context, l *leaseLab, d daemon, round, n int) (float64, float64, error) {
	prefix := fmt.Sprintf("/bench/full%d", round)
	peers := make([]labkit.Peer, n)
	kv := make([][2]string, n)
	for i := range peers {
		peers[i] = labkit.PeerN(i)
		kv[i] = [2]string{leaseKey(peers[i], prefix), leaseValue(peers[i])}
	}
	if err := l.putMany(ctx, kv); err != nil {
		return 0, 0, err
	}
	if err := l.put(ctx, prefix+"/config", netConfig); err != nil {
		return 0, 0, err
	}
	node, err := l.node(ctx)
	if err != nil {
		return 0, 0, err
	}
	t, err := labkit.Track(node.path)
	if err != nil {
		return 0, 0, err
	}
	defer t.Stop()
	dir := filepath.Join(l.dir, node.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	cmd, err := l.spawn(node, d.name+"-"+node.name, io.Discard, d.argv(etcdURL, prefix, dir)...)
	if err != nil {
		return 0, 0, err
	}
	defer proc.Stop(cmd, stopGrace)
	last, ok := t.Programmed(peers, start.Add(60*time.Second))
	if !ok {
		return 0, 0, fmt.Errorf("%s did not program all %d peers within 60 s", d.name, n)
	}
	return last.Sub(start).Seconds(), labkit.ProcStatus(cmd.Process.Pid, "VmHWM"), nil
}
