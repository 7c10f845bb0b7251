package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cnisuite/cni/internal/proc"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// The data plane (issue 3): two node pairs on the same veth underlay, one
// pair's overlay set up by subnetd, the other's a vxlan configured by hand
// as flannel's vxlan backend would (same port, MTU, static FDB, neighbour
// and routes). Pods are namespaces with a veth into their node, routed.
const (
	overlayMTU = 1450
	handVNI    = 2
)

// path is one way across: a client namespace, a server namespace and the
// server's address.
type path struct {
	name           string
	client, server *namespace
	to             string
}

// dataPlane measures throughput and RTT of our overlay against the hand-made
// vxlan and against the underlay, alternating the paths.
func dataPlane(ctx context.Context, cfg config, work string) []row {
	const scen = "data plane"
	etcdBin, err1 := exec.LookPath("etcd")
	_, err2 := exec.LookPath("iperf3")
	if err1 != nil || err2 != nil {
		return []row{{scenario: scen, metric: "not run: needs etcd and iperf3 (Debian's etcd-server, iperf3)", status: "skipped"}}
	}
	dir := filepath.Join(work, "dataplane")
	d, err := buildSubnetd(ctx, cfg.repo, filepath.Join(dir, "bin"))
	if err != nil {
		return []row{{scenario: scen, metric: firstLine(err), status: "FAILED"}}
	}
	l, err := newLeaseLab(ctx, etcdBin, dir)
	defer func() {
		if err := l.close(); err != nil {
			slog.Warn("data plane clean-up", "err", err)
		}
	}()
	var paths [3]path
	if err == nil {
		paths, err = dataPaths(ctx, l, d)
	}
	if err != nil {
		return []row{{scenario: scen, metric: firstLine(err), status: "FAILED"}}
	}
	var gbps, rtt [3][]float64
	for r := range cfg.dpRuns {
		for _, k := range [][3]int{{0, 1, 2}, {2, 1, 0}}[r%2] {
			g, err := iperf(ctx, l, paths[k], cfg.dpSeconds)
			if err != nil {
				return []row{{scenario: scen, metric: paths[k].name + ": " + firstLine(err), status: "FAILED"}}
			}
			ms, err := pingRTT(ctx, paths[k])
			if err != nil {
				return []row{{scenario: scen, metric: paths[k].name + ": " + firstLine(err), status: "FAILED"}}
			}
			gbps[k], rtt[k] = append(gbps[k], g), append(rtt[k], ms)
		}
	}
	// paths: 0 hand-made vxlan, 1 ours, 2 underlay.
	return []row{
		{scenario: scen, metric: "pod→pod TCP Gbit/s: hand-made vxlan (ref) vs subnetd's", prec: 2, better: higherBetter,
			ref: summarize(gbps[0]), ours: summarize(gbps[1]), target: 0.95},
		{scenario: scen, metric: "pod→pod RTT ms: hand-made vxlan (ref) vs subnetd's", prec: 3, ref: summarize(rtt[0]), ours: summarize(rtt[1])},
		{scenario: scen, metric: "TCP Gbit/s: underlay node→node (ref) vs subnetd's pod→pod", prec: 2, better: higherBetter,
			ref: summarize(gbps[2]), ours: summarize(gbps[1])},
		{scenario: scen, metric: "RTT ms: underlay node→node (ref) vs subnetd's pod→pod", prec: 3, ref: summarize(rtt[2]), ours: summarize(rtt[1])},
	}
}

// dataPaths builds both node pairs and returns the three paths.
func dataPaths(ctx context.Context, l *leaseLab, d daemon) ([3]path, error) {
	var p [3]path
	ours, err := subnetdPair(ctx, l, d)
	if err != nil {
		return p, fmt.Errorf("subnetd's overlay: %w", err)
	}
	hand, err := handPair(ctx, l)
	if err != nil {
		return p, fmt.Errorf("the hand-made vxlan: %w", err)
	}
	under := path{name: "underlay", client: ours[0].node, server: ours[1].node, to: ours[1].addr}
	return [3]path{
		{name: "hand-made vxlan", client: hand[0].pod, server: hand[1].pod, to: hand[1].podIP},
		{name: "subnetd's vxlan", client: ours[0].pod, server: ours[1].pod, to: ours[1].podIP},
		under,
	}, nil
}

// dpNode is a node of the data plane with its one pod.
type dpNode struct {
	node, pod *namespace
	addr      string // on the underlay
	podIP     string
}

// subnetdPair starts subnetd on two nodes and gives each a pod in its lease.
func subnetdPair(ctx context.Context, l *leaseLab, d daemon) ([2]dpNode, error) {
	var out [2]dpNode
	const prefix = "/bench/dataplane"
	if err := l.put(ctx, prefix+"/config", netConfig); err != nil {
		return out, err
	}
	for i := range out {
		n := &out[i]
		n.addr = fmt.Sprintf("192.168.78.%d", 20+i)
		var err error
		if n.node, err = l.nodeAt(ctx, n.addr); err != nil {
			return out, err
		}
		dir := filepath.Join(l.dir, n.node.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return out, err
		}
		if _, err := l.spawn(n.node, "subnetd-"+n.node.name, io.Discard, d.argv(etcdURL, prefix, dir)...); err != nil {
			return out, err
		}
	}
	for i := range out {
		env, err := waitEnv(filepath.Join(l.dir, out[i].node.name, "subnet.env"))
		if err != nil {
			return out, err
		}
		gw := env.Subnet.Addr()
		if out[i].pod, out[i].podIP, err = l.pod(ctx, out[i].node, gw.String(), gw.Next().String(), env.Subnet.Bits()); err != nil {
			return out, err
		}
	}
	return out, nil
}

func waitEnv(file string) (envfile.Env, error) {
	for start := time.Now(); time.Since(start) < 20*time.Second; time.Sleep(50 * time.Millisecond) {
		if e, err := envfile.Read(file); err == nil && e.Subnet.IsValid() {
			return e, nil
		}
	}
	return envfile.Env{}, fmt.Errorf("no subnet.env at %s within 20 s", file)
}

// pod makes a namespace with eth0 (MTU of the overlay) at podIP, routed
// through its node, where the veth's node end holds gw.
func (l *leaseLab) pod(ctx context.Context, node *namespace, gw, podIP string, bits int) (*namespace, string, error) {
	pod, err := l.nss.add(ctx, node.name+"p")
	if err != nil {
		return nil, "", err
	}
	mtu := strconv.Itoa(overlayMTU)
	cidr := "/" + strconv.Itoa(bits)
	for _, args := range [][]string{
		{"-n", node.name, "link", "add", "pod0", "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", pod.name},
		{"-n", node.name, "addr", "add", gw + cidr, "dev", "pod0"},
		{"-n", node.name, "link", "set", "pod0", "up"},
		{"-n", pod.name, "addr", "add", podIP + cidr, "dev", "eth0"},
		{"-n", pod.name, "link", "set", "eth0", "up"},
		{"-n", pod.name, "route", "add", "default", "via", gw},
	} {
		if err := ip(ctx, args...); err != nil {
			return nil, "", err
		}
	}
	_, err = node.output(ctx, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return pod, podIP, err
}

// handPair is two nodes whose vxlan is configured by hand as flannel's vxlan
// backend configures it: UDP port 8472, no learning, the overlay's MTU, one
// static FDB entry, neighbour and onlink route per peer.
func handPair(ctx context.Context, l *leaseLab) ([2]dpNode, error) {
	var out [2]dpNode
	macs := [2]string{"0a:aa:00:00:00:01", "0a:aa:00:00:00:02"}
	for i := range out {
		n := &out[i]
		n.addr = fmt.Sprintf("192.168.78.%d", 30+i)
		var err error
		if n.node, err = l.nodeAt(ctx, n.addr); err != nil {
			return out, err
		}
		if n.pod, n.podIP, err = l.pod(ctx, n.node, fmt.Sprintf("10.250.%d.1", i+1), fmt.Sprintf("10.250.%d.2", i+1), 24); err != nil {
			return out, err
		}
	}
	for i := range out {
		me, peer := out[i], out[1-i]
		peerVTEP := fmt.Sprintf("10.250.%d.0", 2-i)
		for _, args := range [][]string{
			{"link", "add", "vx0", "address", macs[i], "mtu", strconv.Itoa(overlayMTU), "type", "vxlan", "id", strconv.Itoa(handVNI),
				"local", me.addr, "dev", "eth0", "dstport", "8472", "nolearning"},
			{"addr", "add", fmt.Sprintf("10.250.%d.0/32", i+1), "dev", "vx0"},
			{"link", "set", "vx0", "up"},
			{"neigh", "add", peerVTEP, "lladdr", macs[1-i], "dev", "vx0", "nud", "permanent"},
			{"route", "add", fmt.Sprintf("10.250.%d.0/24", 2-i), "via", peerVTEP, "dev", "vx0", "onlink"},
		} {
			if err := ip(ctx, append([]string{"-n", me.node.name}, args...)...); err != nil {
				return out, err
			}
		}
		if _, err := me.node.output(ctx, "bridge", "fdb", "append", macs[1-i], "dev", "vx0", "dst", peer.addr); err != nil {
			return out, err
		}
	}
	return out, nil
}

// iperf runs one iperf3 test of secs seconds over p and returns Gbit/s
// received.
func iperf(ctx context.Context, l *leaseLab, p path, secs int) (float64, error) {
	srv, err := l.spawn(p.server, "iperf3-"+p.server.name, io.Discard, "iperf3", "-s", "-1", "-B", p.to)
	if err != nil {
		return 0, err
	}
	defer proc.Stop(srv, stopGrace)
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		g, err := iperfOnce(ctx, p, secs)
		// The server may not listen yet: retry its refusals for a while.
		if err == nil || !strings.Contains(err.Error(), "unable to connect") || time.Since(start) > 5*time.Second {
			return g, err
		}
	}
}

func iperfOnce(ctx context.Context, p path, secs int) (float64, error) {
	out, err := p.client.output(ctx, "iperf3", "-J", "-c", p.to, "-t", strconv.Itoa(secs))
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil || res.Error != "" || res.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3 to %s: %q: %w", p.to, res.Error, errors.Join(err, jerr, errors.New("no figures")))
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

var rttLine = regexp.MustCompile(`= [0-9.]+/([0-9.]+)/`)

// pingRTT is ping's average over 100 echoes 10 ms apart, in ms.
func pingRTT(ctx context.Context, p path) (float64, error) {
	out, err := p.client.output(ctx, "ping", "-q", "-c", "100", "-i", "0.01", p.to)
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", p.to, err)
	}
	m := rttLine.FindStringSubmatch(out)
	if m == nil {
		return math.NaN(), fmt.Errorf("ping said %q", strings.TrimSpace(out))
	}
	return strconv.ParseFloat(m[1], 64)
}

// add appends rows to the table; a FAILED one fails the run as well.
func (o *outcome) add(rows []row) {
	for _, r := range rows {
		if r.status == "FAILED" {
			o.errs = append(o.errs, fmt.Errorf("%s: %s", r.scenario, r.metric))
		}
	}
	o.rows = append(o.rows, rows...)
}
