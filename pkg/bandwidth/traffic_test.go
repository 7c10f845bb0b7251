package bandwidth

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The traffic tests' limits: low enough for a busy 2-core machine to reach
// them many times over, different per direction so that each is seen to
// have its own; a burst of 64 kB, a GSO packet, so that tbf never splits
// one.
const (
	egressRate   = 10_000_000
	ingressRate  = 20_000_000
	trafficBurst = 512_000
)

// peer is a namespace behind the node, for the pod to exchange traffic
// with (the node routes between them).
func (e *env) peer(addrs ...string) *pod {
	e.t.Helper()
	e.node.Run(e.t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	return e.addPod(addrs...)
}

// iperfRuns counts iperf's runs, each on a port of its own from 5201.
var iperfRuns atomic.Int32

// iperf measures a TCP stream between pod and the peer's address to, with
// the pod sending (egress) or receiving (ingress, iperf3's -R), for secs
// seconds after one to settle; it returns the received bits/s.
func iperf(t *testing.T, pod, peer *pod, to string, ingress bool, secs int) float64 {
	t.Helper()
	// A port per run: a one-off server (-1) outlives the client's results
	// for a moment, and the next run's server on its port failed to bind.
	port := fmt.Sprint(5200 + iperfRuns.Add(1))
	srv := exec.Command("ip", "netns", "exec", peer.ns.Name, "iperf3", "-s", "-1", "--forceflush", "-B", to, "-p", port)
	var stderr bytes.Buffer
	srv.Stderr = &stderr
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("starting iperf3: %v", err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	if !waitFor(bufio.NewScanner(out), "Server listening") {
		t.Fatalf("iperf3 server did not start: %s", stderr.String())
	}
	args := []string{"iperf3", "-J", "-c", to, "-p", port, "-t", fmt.Sprint(secs), "-O", "1"}
	if ingress {
		args = append(args, "-R")
	}
	res, _ := pod.ns.Try(args...)
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(res), &r); err != nil || r.Error != "" || r.End.SumReceived.BitsPerSecond == 0 {
		t.Fatalf("iperf3 %v: %v %q\n%s", args, err, r.Error, res)
	}
	return r.End.SumReceived.BitsPerSecond
}

func waitFor(s *bufio.Scanner, text string) bool {
	found := make(chan bool, 1)
	go func() {
		for s.Scan() {
			if strings.Contains(s.Text(), text) {
				found <- true
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		return ok
	case <-time.After(10 * time.Second):
		return false
	}
}

// wantShaped checks that a stream measured by run got within 10% of
// rate. A stream that fell short is measured again, up to twice: on a busy
// machine a starved sender leaves the link idle, which only lowers the
// figure, never raises it.
func wantShaped(t *testing.T, what string, run func() float64, rate float64) {
	t.Helper()
	got := run()
	for try := 1; try < 3 && got < 0.9*rate; try++ {
		t.Logf("%s: %.2f Mbit/s, under the limit of %.0f Mbit/s: measuring again", what, got/1e6, rate/1e6)
		got = run()
	}
	t.Logf("%s: %.2f Mbit/s, limit %.0f Mbit/s", what, got/1e6, rate/1e6)
	if got < 0.9*rate || got > 1.1*rate {
		t.Errorf("%s: %.2f Mbit/s, want within 10%% of %.0f Mbit/s", what, got/1e6, rate/1e6)
	}
}

// wantUnshaped checks that a stream went well past the limit.
func wantUnshaped(t *testing.T, what string, got, rate float64) {
	t.Helper()
	t.Logf("%s: %.2f Mbit/s, limit %.0f Mbit/s not applied", what, got/1e6, rate/1e6)
	if got < 3*rate {
		t.Errorf("%s: %.2f Mbit/s, want it unshaped (over 3 times the %.0f Mbit/s limit)", what, got/1e6, rate/1e6)
	}
}

func trafficConf(t *testing.T, p *pod, subnets map[string]any) string {
	over := map[string]any{"ingressRate": ingressRate, "ingressBurst": trafficBurst, "egressRate": egressRate, "egressBurst": trafficBurst}
	for k, v := range subnets {
		over[k] = v
	}
	return netConf(t, "1.1.0", p, over)
}

// TestTrafficShaped: a TCP stream from the pod gets the egress rate, one
// to it the ingress rate, within 10%.
func TestTrafficShaped(t *testing.T) {
	e := newEnv(t)
	p := e.addPod("10.10.1.2/24")
	peer := e.peer("10.20.1.2/24")
	e.mustAdd(p.args(trafficConf(t, p, nil)))
	wantShaped(t, "egress", func() float64 { return iperf(t, p, peer, "10.20.1.2", false, 3) }, egressRate)
	wantShaped(t, "ingress", func() float64 { return iperf(t, p, peer, "10.20.1.2", true, 3) }, ingressRate)
}

// TestTrafficSubnets: with unshapedSubnets (over IPv4) and shapedSubnets
// (over IPv6), the traffic with a shaped peer gets the limits in both
// directions, the traffic with the other peer does not.
func TestTrafficSubnets(t *testing.T) {
	tests := []struct {
		key          string
		shaped, free string // a shaped and an unshaped peer address
		list         []string
	}{
		{"unshapedSubnets", "10.20.1.2", "10.30.1.2", []string{"10.30.0.0/16", "fd00:30::/32"}},
		{"shapedSubnets", "fd00:20:1::2", "fd00:30:1::2", []string{"10.20.0.0/16", "fd00:20::/32"}},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			e := newEnv(t)
			p := e.addPod("10.10.1.2/24", "fd00:10:1::2/64")
			shaped := e.peer("10.20.1.2/24", "fd00:20:1::2/64")
			free := e.peer("10.30.1.2/24", "fd00:30:1::2/64")
			e.mustAdd(p.args(trafficConf(t, p, map[string]any{tt.key: tt.list})))
			wantShaped(t, "egress to "+tt.shaped, func() float64 { return iperf(t, p, shaped, tt.shaped, false, 3) }, egressRate)
			wantShaped(t, "ingress from "+tt.shaped, func() float64 { return iperf(t, p, shaped, tt.shaped, true, 3) }, ingressRate)
			wantUnshaped(t, "egress to "+tt.free, iperf(t, p, free, tt.free, false, 1), egressRate)
			wantUnshaped(t, "ingress from "+tt.free, iperf(t, p, free, tt.free, true, 1), ingressRate)
		})
	}
}
