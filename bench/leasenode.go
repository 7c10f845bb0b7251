package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/cnisuite/cni/bench/labkit"
	"github.com/cnisuite/cni/internal/proc"
	"github.com/cnisuite/cni/pkg/netns"
)

// leaseLab is the underlay namespace with etcd, and the node namespaces made
// in it; close deletes all of them and stops every process.
type leaseLab struct {
	nss   namespaces
	ul    *namespace
	dir   string
	procs []*exec.Cmd
	cli   *clientv3.Client // from the bench, dialled inside the underlay
	nodes int
}

func newLeaseLab(ctx context.Context, etcdBin, dir string) (*leaseLab, error) {
	return newLeaseLabAt(ctx, etcdBin, dir, filepath.Join(dir, "etcd"))
}

// newLeaseLabAt starts etcd with its data (its WAL, fsynced on every commit)
// under etcdDir: on disk as in production, or on tmpfs to show etcd's share.
func newLeaseLabAt(ctx context.Context, etcdBin, dir, etcdDir string) (*leaseLab, error) {
	l := &leaseLab{dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return l, err
	}
	var err error
	if l.ul, err = l.nss.add(ctx, fmt.Sprintf("cnib%d-ul", os.Getpid())); err != nil {
		return l, err
	}
	for _, args := range [][]string{{"link", "add", "br0", "type", "bridge"}, {"addr", "add", ulAddr + "/24", "dev", "br0"}, {"link", "set", "br0", "up"}} {
		if err := ip(ctx, append([]string{"-n", l.ul.name}, args...)...); err != nil {
			return l, err
		}
	}
	if _, err := l.spawn(l.ul, "etcd", io.Discard, etcdBin, "--data-dir", etcdDir,
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380"); err != nil {
		return l, err
	}
	// The bench's own gRPC client, as the daemons use, dialled from inside
	// the underlay namespace.
	dial := func(ctx context.Context, addr string) (c net.Conn, err error) {
		err2 := netns.Do(l.ul.path, func() error {
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return nil
		})
		return c, errors.Join(err, err2)
	}
	l.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 10 * time.Second,
		Logger: zap.NewNop(), DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)}})
	if err != nil {
		return l, err
	}
	for start := time.Now(); time.Since(start) < 20*time.Second; time.Sleep(100 * time.Millisecond) {
		if l.put(ctx, "/bench-ping", "x") == nil {
			return l, nil
		}
	}
	return l, fmt.Errorf("etcd did not start serving within 20 s")
}

// spawn starts argv inside ns with its output to out; close stops it.
func (l *leaseLab) spawn(ns *namespace, name string, out io.Writer, argv ...string) (*exec.Cmd, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name}, argv...)...)
	if out == io.Discard {
		f, err := os.Create(filepath.Join(l.dir, name+".log"))
		if err != nil {
			return nil, err
		}
		out = f
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	l.procs = append(l.procs, cmd)
	return cmd, nil
}

// stopGrace is how long a daemon the bench started gets to exit on SIGTERM.
const stopGrace = 10 * time.Second

func (l *leaseLab) close() error {
	for i := len(l.procs) - 1; i >= 0; i-- {
		proc.Stop(l.procs[i], stopGrace)
	}
	if l.cli != nil {
		l.cli.Close()
	}
	return l.nss.deleteAll()
}

// node makes a fresh node namespace with eth0 on the underlay.
func (l *leaseLab) node(ctx context.Context) (*namespace, error) {
	return l.nodeAt(ctx, nodeAddr)
}

// nodeAt makes a fresh node namespace with eth0 at addr on the underlay.
func (l *leaseLab) nodeAt(ctx context.Context, addr string) (*namespace, error) {
	l.nodes++
	n, err := l.nss.add(ctx, fmt.Sprintf("cnib%d-ln%d", os.Getpid(), l.nodes))
	if err != nil {
		return nil, err
	}
	peer := fmt.Sprintf("ulv%d", l.nodes)
	for _, args := range [][]string{
		{"-n", l.ul.name, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", n.name},
		{"-n", l.ul.name, "link", "set", peer, "master", "br0", "up"},
		{"-n", n.name, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", n.name, "link", "set", "eth0", "up"},
	} {
		if err := ip(ctx, args...); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// put writes one key with a deadline.
func (l *leaseLab) put(ctx context.Context, key, value string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := l.cli.Put(ctx, key, value)
	return err
}

// putMany writes keys 100 to a transaction.
func (l *leaseLab) putMany(ctx context.Context, kv [][2]string) error {
	for len(kv) > 0 {
		n := min(100, len(kv))
		var ops []clientv3.Op
		for _, p := range kv[:n] {
			ops = append(ops, clientv3.OpPut(p[0], p[1]))
		}
		tctx, cancel := context.WithTimeout(ctx, stopGrace)
		_, err := l.cli.Txn(tctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return err
		}
		kv = kv[n:]
	}
	return nil
}

// leaseKey is the etcd key of a peer's lease under prefix.
func leaseKey(p labkit.Peer, prefix string) string {
	return fmt.Sprintf("%s/subnets/%s-%d", prefix, p.Subnet.Addr(), p.Subnet.Bits())
}

// leaseValue is a peer's lease as flanneld writes it.
func leaseValue(p labkit.Peer) string {
	return fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":%s}`, p.Public, p.BackendData())
}

// errorLine matches the first line a daemon logs about a failure: glog's
// E-lines (flanneld), slog's ERROR and WARN levels (subnetd) and any line
// mentioning an error or a failure.
var errorLine = regexp.MustCompile(`(?i)^E\d{4}|level=(ERROR|WARN)|error|fail|unreachable`)

// firstError starts d with an etcd nobody answers at and returns the seconds
// to its first error line, NaN when none came within wait.
func (l *leaseLab) firstError(ctx context.Context, d daemon, wait time.Duration) (float64, error) {
	node, err := l.node(ctx)
	if err != nil {
		return 0, err
	}
	dir := filepath.Join(l.dir, node.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	pr, pw := io.Pipe()
	lines := make(chan time.Time, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if errorLine.MatchString(sc.Text()) {
				select {
				case lines <- time.Now():
				default:
				}
			}
		}
	}()
	start := time.Now()
	cmd, err := l.spawn(node, d.name+"-dead", pw, d.argv(deadURL, "/bench/dead", dir)...)
	if err != nil {
		return 0, err
	}
	defer func() { proc.Stop(cmd, stopGrace); pw.Close() }()
	select {
	case at := <-lines:
		return at.Sub(start).Seconds(), nil
	case <-time.After(wait):
		return math.NaN(), nil
	}
}

// bystander is the bench's own watch on a prefix: when it sees a key is when
// any client of etcd can first know of it, the moment a lease "appears".
type bystander struct {
	*labkit.Sightings
	stop context.CancelFunc
}

func (l *leaseLab) watch(ctx context.Context, prefix string) (*bystander, error) {
	ctx, cancel := context.WithCancel(ctx)
	b := &bystander{Sightings: labkit.NewSightings(), stop: cancel}
	ch := l.cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if first, ok := <-ch; !ok || !first.Created {
		cancel()
		return nil, fmt.Errorf("watching %s: %v", prefix, first.Err())
	}
	go func() {
		for resp := range ch {
			now := time.Now()
			keys := make([]string, len(resp.Events))
			for i, ev := range resp.Events {
				keys[i] = string(ev.Kv.Key)
			}
			b.Saw(now, keys...)
		}
	}()
	return b, nil
}
