package podfilter

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestNFTablesLifecycle runs ADD, CHECK, a repeated ADD, DEL and GC in a
// namespace, with an admin's drop policy on the table's FORWARD that the
// ADDs keep, and checks what nft lists.
func TestNFTablesLifecycle(t *testing.T) {
	node := netnstest.New(t, "fw-nft")
	ctx, h := context.Background(), NFTables{}
	c := testConf()
	c.Isolation = &Isolation{Bridge: "cni0", Isolated: true}
	other := &Conf{Attachment: Attachment{"net", "c2", "eth0"}, AdminChain: "MY-ADMIN", Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.6")}}
	node.Do(t, func() error { return h.Add(ctx, c) })
	node.Run(t, "nft", "chain inet cnisuite_firewall FORWARD { policy drop ; }")
	node.Do(t, func() error { return h.Add(ctx, other) })
	node.Do(t, func() error { return h.Add(ctx, c) })
	listed := node.Run(t, "nft", "list", "table", "inet", "cnisuite_firewall")
	for _, want := range []string{
		"type filter hook forward priority filter; policy drop;",
		"jump CNI-ISOLATION-STAGE-1 comment \"CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)\"\n\t\tjump CNI-FORWARD comment",
		"chain CNI-FORWARD {\n\t\tjump MY-ADMIN comment \"CNI firewall plugin admin overrides\"\n\t\tjump CNI-ADMIN",
		"ip daddr 10.1.0.5 ct state established,related accept comment \"firewall name: net id: c1 ifname: eth0\"",
		"ip6 saddr fd00::5 accept comment \"firewall name: net id: c1 ifname: eth0\"",
		"ip saddr 10.1.0.6 accept comment \"firewall name: net id: c2 ifname: eth0\"",
		"iifname \"cni0\" oifname != \"cni0\" jump CNI-ISOLATION-STAGE-2",
		"iifname \"cni0\" oifname \"cni0\" drop",
		"oifname \"cni0\" drop",
		"chain CNI-ADMIN {\n\t}", "chain MY-ADMIN {\n\t}",
	} {
		if !strings.Contains(listed, want) {
			t.Errorf("nft lacks %q:\n%s", want, listed)
		}
	}
	if n := strings.Count(listed, "10.1.0.5"); n != 2 {
		t.Errorf("a repeated ADD left %d rules of 10.1.0.5, want 2:\n%s", n, listed)
	}
	node.Do(t, func() error { return h.Check(ctx, c) })
	node.Do(t, func() error { return h.Check(ctx, other) })
	node.Run(t, "nft", "flush", "chain", "inet", "cnisuite_firewall", "CNI-ISOLATION-STAGE-2")
	var err error
	node.Do(t, func() error { err = h.Check(ctx, c); return nil })
	if err == nil || !strings.Contains(err.Error(), "CNI-ISOLATION-STAGE-2") {
		t.Errorf("CHECK with stage 2 flushed: %v", err)
	}
	for range 2 {
		node.Do(t, func() error { return h.Del(ctx, c.Attachment) })
	}
	listed = node.Run(t, "nft", "list", "table", "inet", "cnisuite_firewall")
	if strings.Contains(listed, "c1") || !strings.Contains(listed, "10.1.0.6") || !strings.Contains(listed, "policy drop") {
		t.Errorf("after DEL of c1:\n%s", listed)
	}
	node.Do(t, func() error { return h.GC(ctx, "net2", func(string, string) bool { return false }) })
	node.Do(t, func() error { return h.GC(ctx, "net", func(id, _ string) bool { return id == "c2" }) })
	if !strings.Contains(node.Run(t, "nft", "list", "table", "inet", "cnisuite_firewall"), "10.1.0.6") {
		t.Error("GC removed a valid attachment's rule")
	}
	node.Do(t, func() error { return h.GC(ctx, "net", func(string, string) bool { return false }) })
	if strings.Contains(node.Run(t, "nft", "list", "table", "inet", "cnisuite_firewall"), "10.1.0.6") {
		t.Error("GC kept a stale attachment's rule")
	}
}

// TestNFTablesWithoutTable: DEL and GC of a namespace that never had the
// table succeed and create nothing; CHECK says it is missing.
func TestNFTablesWithoutTable(t *testing.T) {
	node := netnstest.New(t, "fw-none")
	var checkErr error
	node.Do(t, func() error {
		if err := (NFTables{}).Del(context.Background(), att); err != nil {
			return err
		}
		checkErr = NFTables{}.Check(context.Background(), testConf())
		return NFTables{}.GC(context.Background(), "net", func(string, string) bool { return false })
	})
	if checkErr == nil || !strings.Contains(checkErr.Error(), "the table is missing") {
		t.Errorf("CHECK without the table: %v", checkErr)
	}
	if s := node.Run(t, "nft", "list", "ruleset"); s != "" {
		t.Errorf("ruleset:\n%s", s)
	}
}

// TestNFTablesConcurrentFirstAdds: the first ADDs of a node, at once,
// build one layout.
func TestNFTablesConcurrentFirstAdds(t *testing.T) {
	node := netnstest.New(t, "fw-race")
	concurrentFirstAdds(t, node, NFTables{}.Add)
	listed := node.Run(t, "nft", "list", "table", "inet", "cnisuite_firewall")
	for _, once := range []string{"jump CNI-FORWARD", "jump CNI-ADMIN", "jump CNI-ISOLATION-STAGE-1", "jump CNI-ISOLATION-STAGE-2", "oifname \"cni0\" drop"} {
		if n := strings.Count(listed, once); n != 1 {
			t.Errorf("%q %d times:\n%s", once, n, listed)
		}
	}
	if n := strings.Count(listed, "accept comment \"firewall"); n != 16 {
		t.Errorf("%d pod rules, want 16:\n%s", n, listed)
	}
}
