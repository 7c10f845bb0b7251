//go:build !nokube

package subnetd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/kube"
)

// podCIDRSource is a source in the Kubernetes API's manner: ErrNotAssigned
// until assign, then the pod CIDR; Check fails while down is set.
type podCIDRSource struct {
	mu       sync.Mutex
	network  subnet.Config
	cidr     netip.Prefix
	acquires int
	down     bool
	peers    []subnet.Entry // what Watch hands over
}

// Network reports the pod CIDR's length once acquired, as kube's does.
func (s *podCIDRSource) Network() subnet.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.network
	if s.acquires > 0 && s.cidr.IsValid() {
		c.SubnetLen = s.cidr.Bits()
	}
	return c
}

func (s *podCIDRSource) Acquire(context.Context) (subnet.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acquires++
	if !s.cidr.IsValid() {
		return subnet.Lease{}, fmt.Errorf(`node "n1" %w: assign one`, subnet.ErrNotAssigned)
	}
	return subnet.Lease{Subnets: subnet.Subnets{V4: s.cidr}}, nil
}

func (s *podCIDRSource) Check(_ context.Context, l subnet.Lease) (subnet.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return subnet.Lease{}, errors.New("connection refused")
	}
	return l, nil
}

func (s *podCIDRSource) Owns(subnet.Lease, subnet.Entry) bool { return true }

func (s *podCIDRSource) Watch(ctx context.Context, fn func([]subnet.Entry)) {
	fn(s.peers)
	<-ctx.Done()
}

func (s *podCIDRSource) Release(context.Context, subnet.Lease) error { return nil }

func (s *podCIDRSource) set(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
}

// TestNotAssignedWaits: a node without a pod CIDR is a state: one log line
// naming it, /readyz saying why, retries on the cache every 250 ms, and
// ready within a second of the assignment. Messages name the Kubernetes
// API, never etcd; an unreachable API keeps the node's lease and makes it
// unready.
func TestNotAssignedWaits(t *testing.T) {
	nc, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	src := &podCIDRSource{network: nc}
	cfg := &Config{SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), CheckInterval: 50 * time.Millisecond, EtcdTimeout: time.Second}
	st := &status{window: 300 * time.Millisecond, store: kubeAPI}
	fp := &fakePlane{}
	d := &daemon{cfg: cfg, log: log, src: src, dp: fp, rules: &fakeRules{}, st: st, filter: &peerFilter{config: nc, log: log}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.serve(ctx) }()
	defer func() { cancel(); <-done }()

	time.Sleep(3200 * time.Millisecond)
	if why := st.notReady(time.Now()); !strings.Contains(why, `no valid lease: node "n1" pod cidr not assigned: assign one`) {
		t.Errorf("/readyz while unassigned: %q", why)
	}
	if n := strings.Count(logs.String(), "pod cidr not assigned"); n != 1 {
		t.Errorf("the unassigned state logged %d times in 3 s, want once:\n%s", n, logs.String())
	}
	src.set(func() {
		if src.acquires < 10 {
			t.Errorf("%d attempts in 3 s, want one per 250 ms", src.acquires)
		}
		src.cidr = netip.MustParsePrefix("10.244.7.0/24")
	})
	assigned := time.Now()
	eventually(t, "ready", func() bool { return st.notReady(time.Now()) == "" })
	if took := time.Since(assigned); took > time.Second {
		t.Errorf("ready %v after the assignment, want within 1 s", took)
	}

	src.set(func() { src.down = true })
	eventually(t, "unready while the API is down", func() bool {
		return strings.Contains(st.notReady(time.Now()), "the Kubernetes API not reached within 300ms")
	})
	if !strings.Contains(logs.String(), `msg="the Kubernetes API unreachable; the data plane stays as it is`) || strings.Contains(logs.String(), "etcd") {
		t.Errorf("log of the outage does not name the Kubernetes API, or names etcd:\n%s", logs.String())
	}
	if own := fp.own4(); own != netip.MustParsePrefix("10.244.7.0/24") {
		t.Errorf("data plane set for %v during the outage", own)
	}
}

func (f *fakePlane) own4() netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.own.V4
}

// TestKubeFlags: the Kubernetes API mode's flags, with flanneld's
// defaults; bad ones are refused naming the flag, and only in that mode.
func TestKubeFlags(t *testing.T) {
	parse := func(args ...string) (*Config, error) {
		var c Config
		fs := flag.NewFlagSet("subnetd", flag.ContinueOnError)
		c.flags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &c, c.Validate()
	}
	c, err := parse("--kube-subnet-mgr")
	if err != nil || c.KubeAnnotationPrefix != "flannel.alpha.coreos.com" || !c.SetNodeNetworkUnavailable ||
		c.NetConfigPath != "/etc/kube-flannel/net-conf.json" || c.Kubeconfig != "" || c.KubeAPIURL != "" {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		args []string
		want string // "" when valid
	}{
		{[]string{"--kube-subnet-mgr", "--kube-annotation-prefix", "a/b/c"}, "--kube-annotation-prefix"},
		{[]string{"--kube-subnet-mgr", "--kube-annotation-prefix", "Upper.example.com"}, "--kube-annotation-prefix"},
		{[]string{"--kube-subnet-mgr", "--net-config-path", ""}, "--net-config-path"},
		{[]string{"--kube-subnet-mgr", "--kube-api-url", "10.0.0.1:6443"}, "--kube-api-url"},
		{[]string{"--kube-subnet-mgr", "--kube-api-url", "https://10.0.0.1:6443", "--kube-annotation-prefix", "example.com/net",
			"--set-node-network-unavailable=false", "--kubeconfig-file", "/etc/kubeconfig"}, ""},
		{[]string{"--kube-annotation-prefix", "a/b/c"}, ""}, // etcd mode: not read
	} {
		_, err := parse(tc.args...)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}

// TestPodCIDRLength: the peers are judged with the subnet length of the
// node's pod CIDR, which kube-controller-manager chose (a /26 here), not
// the net config's SubnetLen (24 by default).
func TestPodCIDRLength(t *testing.T) {
	nc, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	peer := subnet.Entry{Subnets: subnet.Subnets{V4: netip.MustParsePrefix("10.244.0.64/26")}, Value: vxlanValue("192.168.0.2", "n2", "0a:00:00:00:00:02"), Rev: 1}
	src := &podCIDRSource{network: nc, cidr: netip.MustParsePrefix("10.244.0.0/26"), peers: []subnet.Entry{peer}}
	cfg := &Config{SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), CheckInterval: time.Hour, EtcdTimeout: time.Second}
	fp := &fakePlane{}
	d := &daemon{cfg: cfg, log: log, src: src, dp: fp, rules: &fakeRules{}, st: &status{window: time.Hour}, filter: &peerFilter{config: nc, log: log}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.serve(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "the /26 peer programmed", func() bool { return slices.Equal(fp.peerSubnets(), []string{"10.244.0.64/26"}) })
}

// The build without the Kubernetes mode has its own copy of the default.
func TestDefaultKubePrefix(t *testing.T) {
	if defaultKubePrefix != kube.DefaultPrefix {
		t.Fatalf("defaultKubePrefix %q, kube.DefaultPrefix %q", defaultKubePrefix, kube.DefaultPrefix)
	}
}
