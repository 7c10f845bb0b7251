package subnetd

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/netfilter/hostrules"
)

// countingRules counts the applications of the host rules.
type countingRules struct {
	mu       sync.Mutex
	ensures  int
	last     hostrules.Rules
	tornDown bool
}

func (c *countingRules) Ensure(_ context.Context, r hostrules.Rules) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ensures++
	c.last = r
	return nil, nil
}

func (c *countingRules) Teardown(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tornDown = true
	return nil
}

func (c *countingRules) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ensures
}

// TestIPTablesResync: the host rules the daemon last asked for are applied
// again every --iptables-resync, none before the daemon's first and none
// after the teardown.
func TestIPTablesResync(t *testing.T) {
	inner := &countingRules{}
	rules := &resyncedRules{hostRules: inner}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		resyncHost(ctx, 20*time.Millisecond, rules, nil, &status{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond)
	if n := inner.count(); n != 0 {
		t.Fatalf("%d applications before the daemon asked for rules", n)
	}
	want := hostrules.Rules{Masq: true, Nets: []hostrules.Net{{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24")}}}
	if _, err := rules.Ensure(ctx, want); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rules applied again", func() bool { return inner.count() >= 4 })
	inner.mu.Lock()
	if !inner.last.Masq || len(inner.last.Nets) != 1 {
		t.Errorf("re-applied %+v, want %+v", inner.last, want)
	}
	inner.mu.Unlock()
	if err := rules.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	n := inner.count()
	time.Sleep(100 * time.Millisecond)
	if after := inner.count(); after != n || !inner.tornDown {
		t.Fatalf("applied %d times after the teardown", after-n)
	}
}
