package podfilter

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cnisuite/cni/pkg/netfilter/iptables"
	"github.com/cnisuite/cni/pkg/netfilter/iptablestest"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestIPTablesLifecycle runs ADD, CHECK, a repeated ADD, DEL and GC with
// the real iptables in a namespace, over both ways of deleting (netlink on
// iptables-nft, and iptables-save/-restore as on legacy iptables), and
// checks that what iptables-save lists is what the plan expects, that
// another attachment's rules stay, and that the namespace ends as it
// started but for the shared chains.
func TestIPTablesLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name  string
		quick QuickSweep
	}{{"netlink", nil}, {"iptables-restore", never}} {
		t.Run(tc.name, func(t *testing.T) {
			node := netnstest.New(t, "fw-ipt")
			ctx, h := context.Background(), IPTables{Quick: tc.quick}
			c := testConf()
			c.Isolation = &Isolation{Bridge: "cni0"}
			other := &Conf{Attachment: Attachment{"net", "c2", "eth0"}, Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.6")}}
			node.Do(t, func() error { return h.Add(ctx, c) })
			node.Do(t, func() error { return h.Add(ctx, other) })
			saved := iptablestest.Ruleset(t, node, "iptables-save")
			shared, pod := wanted(c, 0)
			for _, l := range lines("-A", append(shared, pod...)) {
				if strings.Count(saved, l+"\n") != 1 {
					t.Errorf("iptables-save lists %q %d times:\n%s", l, strings.Count(saved, l+"\n"), saved)
				}
			}
			if i, j := strings.Index(saved, "-A FORWARD "), strings.Index(saved, "-j CNI-ISOLATION-STAGE-1\n"); i < 0 || j < i || strings.Index(saved[i:], "\n")+i != j+len("-j CNI-ISOLATION-STAGE-1") {
				t.Errorf("the isolation is not FORWARD's first rule:\n%s", saved)
			}
			node.Do(t, func() error { return h.Check(ctx, c) })
			node.Do(t, func() error { return h.Add(ctx, c) })
			if again := iptablestest.Ruleset(t, node, "iptables-save"); !sameLines(again, saved) {
				t.Errorf("a repeated ADD changed the rules:\n%s\nwas:\n%s", again, saved)
			}

			node.Run(t, "iptables", "-D", "CNI-FORWARD", "-s", "10.1.0.5/32", "-m", "comment", "--comment", c.Tag(), "-j", "ACCEPT")
			var err error
			node.Do(t, func() error { err = h.Check(ctx, c); return nil })
			if err == nil || !strings.Contains(err.Error(), "-s 10.1.0.5/32") {
				t.Errorf("CHECK with a rule deleted by hand: %v", err)
			}

			for range 2 {
				node.Do(t, func() error { return h.Del(ctx, c.Attachment, nil) })
			}
			for _, save := range []string{"iptables-save", "ip6tables-save"} {
				if s := iptablestest.Ruleset(t, node, save); strings.Contains(s, "firewall name: net id: c1 ") || (save == "iptables-save" && !strings.Contains(s, "10.1.0.6/32")) {
					t.Errorf("%s after DEL of c1:\n%s", save, s)
				}
			}
			node.Do(t, func() error { return h.GC(ctx, "net", func(string, string) bool { return false }) })
			if s := iptablestest.Ruleset(t, node, "iptables-save"); strings.Contains(s, "10.1.0.6") || !strings.Contains(s, ":CNI-FORWARD") {
				t.Errorf("after GC:\n%s", s)
			}
		})
	}
}

// TestIPTablesDelReferenceRules: the reference's untagged rules of the
// pod's addresses go with its DEL when the prevResult names them (which
// makes the netlink path step aside); others' stay.
func TestIPTablesDelReferenceRules(t *testing.T) {
	node := netnstest.New(t, "fw-ref")
	node.Run(t, "iptables", "-N", "CNI-FORWARD")
	for _, a := range []string{"10.1.0.8", "10.1.0.9"} {
		for _, r := range referenceRules(netip.MustParseAddr(a)) {
			node.Run(t, append([]string{"iptables", "-A", "CNI-FORWARD"}, iptables.Tokenize(r)...)...)
		}
	}
	node.Do(t, func() error {
		return IPTables{}.Del(context.Background(), att, []netip.Addr{netip.MustParseAddr("10.1.0.8")})
	})
	s := iptablestest.Ruleset(t, node, "iptables-save")
	if strings.Contains(s, "10.1.0.8") || strings.Count(s, "10.1.0.9") != 2 {
		t.Errorf("after DEL:\n%s", s)
	}
}

// failingV6 runs the real binaries in a namespace but makes every IPv6
// restore that adds a rule fail, as a broken ip6tables would.
type failingV6 struct{ iptablestest.Netns }

func (r failingV6) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	if name == "ip6tables-restore" && strings.Contains(stdin, "-A ") {
		return "", errFailing
	}
	return r.Netns.Run(ctx, stdin, name, args...)
}

var errFailing = errors.New("ip6tables-restore: line 3 failed")

// TestIPTablesFailedAddLeavesNothing: an ADD whose IPv6 half fails takes
// its IPv4 half back, chains it created included, and leaves a node's
// existing chains and their rules alone.
func TestIPTablesFailedAddLeavesNothing(t *testing.T) {
	node := netnstest.New(t, "fw-undo")
	node.Run(t, "iptables", "-P", "FORWARD", "DROP")
	before := iptablestest.Ruleset(t, node, "iptables-save")
	c := testConf()
	c.Isolation = &Isolation{Bridge: "cni0", Isolated: true}
	h := IPTables{Run: failingV6{iptablestest.Netns{Name: node.Name}}, Quick: never}
	if err := h.Add(context.Background(), c); err == nil {
		t.Fatal("ADD succeeded with IPv6 failing")
	}
	if after := iptablestest.Ruleset(t, node, "iptables-save"); after != before {
		t.Errorf("a failed ADD left:\n%s\nwant:\n%s", after, before)
	}
	// With another pod in place, the shared chains are not this ADD's to take.
	other := &Conf{Attachment: Attachment{"net", "c2", "eth0"}, Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.6")}}
	if err := (IPTables{Run: iptablestest.Netns{Name: node.Name}, Quick: never}).Add(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	kept := iptablestest.Ruleset(t, node, "iptables-save")
	if err := h.Add(context.Background(), c); err == nil {
		t.Fatal("ADD succeeded with IPv6 failing")
	}
	if after := iptablestest.Ruleset(t, node, "iptables-save"); !strings.Contains(after, "10.1.0.6") || strings.Contains(after, "10.1.0.5") ||
		strings.Contains(after, "ISOLATION") != strings.Contains(kept, "ISOLATION") {
		t.Errorf("a failed ADD next to another pod left:\n%s\nwant:\n%s", after, kept)
	}
}

// sameLines tells whether two rulesets hold the same lines, in any order.
func sameLines(a, b string) bool {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	slices.Sort(la)
	slices.Sort(lb)
	return slices.Equal(la, lb)
}

// TestQuickSweep: on iptables-nft the netlink path decides alone, deleting
// exactly the picked rules, and steps aside for untagged rules when asked
// to look for the reference's.
func TestQuickSweep(t *testing.T) {
	node := netnstest.New(t, "fw-quick")
	other := &Conf{Attachment: Attachment{"net", "c2", "eth0"}, Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.6")}}
	var done [4]bool
	node.Do(t, func() error {
		done[0] = nftQuickSweep(0, isTag(att.Tag()), false) // no chain yet
		if err := (IPTables{}).Add(context.Background(), testConf()); err != nil {
			return err
		}
		if err := (IPTables{}).Add(context.Background(), other); err != nil {
			return err
		}
		done[1] = nftQuickSweep(0, isTag(att.Tag()), false)
		return nil
	})
	s := iptablestest.Ruleset(t, node, "iptables-save")
	if strings.Contains(s, "10.1.0.5") || !strings.Contains(s, "10.1.0.6") {
		t.Errorf("after the quick sweep of c1:\n%s", s)
	}
	node.Run(t, "iptables", "-A", "CNI-FORWARD", "-s", "10.1.0.8/32", "-j", "ACCEPT")
	node.Do(t, func() error {
		done[2] = nftQuickSweep(0, isTag(other.Tag()), true)
		done[3] = nftQuickSweep(0, isTag(other.Tag()), false)
		return nil
	})
	if done != [4]bool{true, true, false, true} {
		t.Errorf("decided %v, want [true true false true]", done)
	}
	if s := iptablestest.Ruleset(t, node, "iptables-save"); strings.Contains(s, "10.1.0.6") || !strings.Contains(s, "10.1.0.8") {
		t.Errorf("after the quick sweep of c2:\n%s", s)
	}
}

// TestIPTablesConcurrentFirstAdds: the first ADDs of a node, at once, each
// planning from a table without the chains, end with one layout: a
// restore that lost the race (-N of a chain made meanwhile) plans again.
func TestIPTablesConcurrentFirstAdds(t *testing.T) {
	node := netnstest.New(t, "fw-iptrace")
	concurrentFirstAdds(t, node, IPTables{}.Add)
	saved := iptablestest.Ruleset(t, node, "iptables-save")
	for _, once := range []string{"-j CNI-FORWARD\n", "-j CNI-ADMIN\n", "-j CNI-ISOLATION-STAGE-1\n", "-j CNI-ISOLATION-STAGE-2\n", "-A CNI-ISOLATION-STAGE-2 -o cni0 "} {
		if n := strings.Count(saved, once); n != 1 {
			t.Errorf("%q %d times:\n%s", once, n, saved)
		}
	}
	if n := strings.Count(saved, "-j ACCEPT\n"); n != 16 {
		t.Errorf("%d pod rules, want 16:\n%s", n, saved)
	}
}

// concurrentFirstAdds runs eight ADDs of add in node at once, each a pod of
// its own isolated on cni0, and fails t if any fails.
func concurrentFirstAdds(t *testing.T, node *netnstest.NS, add func(context.Context, *Conf) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			c := &Conf{Attachment: Attachment{"net", "c" + string(rune('a'+i)), "eth0"}, Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, 0, byte(10 + i)})},
				Isolation: &Isolation{Bridge: "cni0"}}
			node.Do(t, func() error { errs[i] = add(context.Background(), c); return nil })
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
