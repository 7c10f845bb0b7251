package e2e

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// cbr0 is the dual-stack example every node-level scenario below runs.
var cbr0 = filepath.Join(confDir, "10-cbr0.conflist")

func newCbr0(t *testing.T) (*libcniClient, *netnstest.NS) {
	t.Helper()
	node := netnstest.New(t, "cni-e2e-node")
	return newLibcniClient(t, node, cbr0), node
}

// TestGCKeepsValidAttachments: a runtime's GC that lists one pod as valid
// removes the other pod's attachment, reservations and rules, and only those.
func TestGCKeepsValidAttachments(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	t.Parallel()
	c, node := newCbr0(t)
	a, b := netnstest.New(t, "cni-e2e-pod"), netnstest.New(t, "cni-e2e-pod")
	resA, resB := mustAdd(t, c, a, "cbr0"), mustAdd(t, c, b, "cbr0")
	if err := c.gc(t, []*netnstest.NS{a}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	detached(t, b, resB)
	attached(t, a, resA)
	pingAll(t, a, gatewaysOf(resA))
	if got, want := reservations(t, c.dataDir(), "cbr0"), addrsOf(resA); !sameSet(got, want) {
		t.Errorf("after GC the reservations are %v, want %v", got, want)
	}
	nat := node.Run(t, "iptables-save", "-t", "nat")
	if !strings.Contains(nat, c.containerID(a)) || strings.Contains(nat, c.containerID(b)) {
		t.Errorf("after GC the nat table should name %s only:\n%s", c.containerID(a), nat)
	}
	if err := c.del(t, a); err != nil {
		t.Fatal(err)
	}
	nothingLeft(t, c, node, "cbr0")
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestCheckNoticesDamage: CHECK through libcni fails once the attachment is
// no longer what ADD made, and DEL still cleans up everything.
func TestCheckNoticesDamage(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	damages := []struct {
		name string
		do   func(t *testing.T, node, pod *netnstest.NS, res *current.Result)
	}{
		{"address removed", func(t *testing.T, _, pod *netnstest.NS, res *current.Result) {
			pod.Run(t, "ip", "addr", "del", res.IPs[0].Address.String(), "dev", "eth0")
		}},
		{"interface down", func(t *testing.T, _, pod *netnstest.NS, _ *current.Result) {
			pod.Run(t, "ip", "link", "set", "eth0", "down")
		}},
		{"host veth off the bridge", func(t *testing.T, node, _ *netnstest.NS, res *current.Result) {
			node.Run(t, "ip", "link", "set", res.Interfaces[1].Name, "nomaster")
		}},
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			c, node := newCbr0(t)
			pod := netnstest.New(t, "cni-e2e-pod")
			res := mustAdd(t, c, pod, "cbr0")
			if err := c.check(t, pod); err != nil {
				t.Fatalf("CHECK before the damage: %v", err)
			}
			d.do(t, node, pod, res)
			if err := c.check(t, pod); err == nil {
				t.Fatal("CHECK passed on a damaged attachment")
			}
			if err := c.del(t, pod); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			nothingLeft(t, c, node, "cbr0")
		})
	}
}

// TestDelAfterNetnsGone: the pod's namespace is deleted before DEL (the
// container died); DEL succeeds and releases the addresses and rules.
func TestDelAfterNetnsGone(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	t.Parallel()
	c, node := newCbr0(t)
	pod := netnstest.New(t, "cni-e2e-pod")
	mustAdd(t, c, pod, "cbr0")
	pod.Delete(t)
	for i := range 2 {
		if err := c.del(t, pod); err != nil {
			t.Fatalf("DEL #%d without the netns: %v", i+1, err)
		}
	}
	if nat := node.Run(t, "iptables-save", "-t", "nat"); strings.Contains(nat, c.containerID(pod)) {
		t.Errorf("masquerade rules left after DEL:\n%s", nat)
	}
	nothingLeft(t, c, node, "cbr0")
}
