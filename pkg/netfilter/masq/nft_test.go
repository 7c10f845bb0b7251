package masq

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netns"
	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestMasqComment(t *testing.T) {
	// The hashes are `printf %s <s> | sha512sum | cut -c1-16`.
	a := Attachment{Network: "testnet", ContainerID: "c1", IfName: "eth0"}
	if got, want := masqComment(a), "c5964c6794a1152e-f4d01f2ef4b92245, net: testnet, if: eth0, id: c1"; got != want {
		t.Errorf("comment %q, want %q", got, want)
	}
	quoted := masqComment(Attachment{Network: "testnet", ContainerID: "c1", IfName: `e"th0`})
	if strings.Contains(quoted, `"`) || !strings.HasSuffix(quoted, "if: eth0, id: c1") {
		t.Errorf("quotes kept: %q", quoted)
	}
	long := Attachment{Network: "testnet", ContainerID: strings.Repeat("x", 200), IfName: "eth0"}
	if c := masqComment(long); len(c) != maxMasqComment || !strings.HasPrefix(c, instanceHash(long)+", net: testnet") {
		t.Errorf("long comment %q (%d bytes)", c, len(c))
	}
}

func TestNFTAbsent(t *testing.T) {
	for _, err := range []error{syscall.EOPNOTSUPP, syscall.EPROTONOSUPPORT} {
		if !nftAbsent(fmt.Errorf("nftables transaction failed 6 times: %w", fmt.Errorf("listing: %w", err))) {
			t.Errorf("%v: not taken for a kernel without nftables", err)
		}
	}
	if nftAbsent(syscall.ENOENT) || nftAbsent(nil) {
		t.Error("ENOENT or nil taken for a kernel without nftables")
	}
}

var (
	attA = Attachment{Network: "testnet", ContainerID: "c1", IfName: "eth0"}
	attB = Attachment{Network: "testnet", ContainerID: "c2", IfName: "eth0"}
	dual = []netip.Prefix{netip.MustParsePrefix("10.244.1.2/24"), netip.MustParsePrefix("fd00:10::2/64")}
)

// refScript is what the reference plugin asks nft for when it sets up
// attA with dual (knftables' transaction, the comments of the table and
// chains aside), with the comment written out by hand.
const refScript = `add table inet cni_plugins_masquerade
add chain inet cni_plugins_masquerade masq_checks
add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority 100 ; }
flush chain inet cni_plugins_masquerade postrouting
add rule inet cni_plugins_masquerade postrouting ip daddr == 224.0.0.0/4  return
add rule inet cni_plugins_masquerade postrouting ip6 daddr == ff00::/8  return
add rule inet cni_plugins_masquerade postrouting goto masq_checks
add rule inet cni_plugins_masquerade masq_checks ip saddr == 10.244.1.2 ip daddr != 10.244.1.0/24 masquerade comment "c5964c6794a1152e-f4d01f2ef4b92245, net: testnet, if: eth0, id: c1"
add rule inet cni_plugins_masquerade masq_checks ip6 saddr == fd00:10::2 ip6 daddr != fd00:10::/64 masquerade comment "c5964c6794a1152e-f4d01f2ef4b92245, net: testnet, if: eth0, id: c1"
`

func nftLoad(t *testing.T, ns *netnstest.NS, script string) {
	t.Helper()
	c := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	c.Stdin = strings.NewReader(script)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
}

var handleRE = regexp.MustCompile(` # handle \d+`)

// listMasq is `nft list` of the masquerade table without handles, or ""
// when there is no table.
func listMasq(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	out, err := ns.Try("nft", "-a", "list", "table", "inet", nftTableName)
	if err != nil {
		if strings.Contains(out, "No such file") {
			return ""
		}
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	return handleRE.ReplaceAllString(out, "")
}

// masqRules lists the comments of masq_checks' rules, one per rule.
func masqRules(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	var out []string
	for line := range strings.Lines(listMasq(t, ns)) {
		if _, c, ok := strings.Cut(line, "masquerade comment "); ok {
			out = append(out, strings.Trim(strings.TrimSpace(c), `"`))
		}
	}
	return out
}

func do(t *testing.T, ns *netnstest.NS, fn func(ctx context.Context) error) {
	t.Helper()
	ns.Do(t, func() error { return fn(context.Background()) })
}

// TestMasqLayoutIsTheReferences: what Setup writes lists, in nft, exactly
// as what the reference writes for the same attachment.
func TestMasqLayoutIsTheReferences(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ours, ref := netnstest.New(t, "masq-ours"), netnstest.New(t, "masq-ref")
	do(t, ours, func(ctx context.Context) error { return NFTables{}.Setup(ctx, attA, dual) })
	nftLoad(t, ref, refScript)
	got, want := listMasq(t, ours), listMasq(t, ref)
	if got != want {
		t.Fatalf("our table:\n%s\nthe reference's:\n%s", got, want)
	}
	for _, line := range []string{"type nat hook postrouting priority srcnat; policy accept;", "ip daddr 224.0.0.0/4 return",
		"ip6 daddr ff00::/8 return", "goto masq_checks", "ip saddr 10.244.1.2 ip daddr != 10.244.1.0/24 masquerade comment",
		"ip6 saddr fd00:10::2 ip6 daddr != fd00:10::/64 masquerade comment"} {
		if !strings.Contains(got, line) {
			t.Errorf("no %q in:\n%s", line, got)
		}
	}
}

// TestMasqSetupConverges: a repeated ADD replaces the attachment's rules
// (also ones the reference wrote), DEL removes them and keeps others',
// and DEL of nothing, or where no table is, succeeds.
func TestMasqSetupConverges(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "masq-conv")
	do(t, ns, func(ctx context.Context) error { return NFTables{}.Teardown(ctx, attA) })
	if out := listMasq(t, ns); out != "" {
		t.Fatalf("DEL without a table created one:\n%s", out)
	}
	nftLoad(t, ns, refScript)
	do(t, ns, func(ctx context.Context) error {
		if err := (NFTables{}).Setup(ctx, attB, dual[:1]); err != nil {
			return err
		}
		return NFTables{}.Setup(ctx, attA, []netip.Prefix{netip.MustParsePrefix("10.244.1.7/24")})
	})
	out := listMasq(t, ns)
	if n := strings.Count(out, " masquerade comment"); n != 2 || !strings.Contains(out, "ip saddr 10.244.1.7 ") || strings.Contains(out, "fd00:10::2") {
		t.Fatalf("after the second ADD of c1, want one rule each of c1 (10.244.1.7) and c2:\n%s", out)
	}
	if strings.Count(out, "goto masq_checks") != 1 {
		t.Errorf("postrouting not rewritten:\n%s", out)
	}
	for range 2 {
		do(t, ns, func(ctx context.Context) error { return NFTables{}.Teardown(ctx, attA) })
	}
	if got := masqRules(t, ns); len(got) != 1 || got[0] != masqComment(attB) {
		t.Fatalf("after DEL of c1, rules %q, want c2's only", got)
	}
	do(t, ns, func(ctx context.Context) error { return NFTables{}.Setup(ctx, attB, nil) })
	if got := masqRules(t, ns); len(got) != 0 {
		t.Fatalf("an ADD without addresses kept rules %q", got)
	}
}

// TestMasqGC removes the rules of the network's attachments not in the
// valid list, whatever interface, and nothing of another network.
func TestMasqGC(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "masq-gc")
	eth1 := Attachment{Network: "testnet", ContainerID: "c1", IfName: "eth1"}
	other := Attachment{Network: "othernet", ContainerID: "c2", IfName: "eth0"}
	long := Attachment{Network: "testnet", ContainerID: strings.Repeat("k", 150), IfName: "eth0"}
	do(t, ns, func(ctx context.Context) error {
		for _, a := range []Attachment{attA, attB, eth1, other, long} {
			if err := (NFTables{}).Setup(ctx, a, dual); err != nil {
				return err
			}
		}
		valid := []netconf.Attachment{{ContainerID: "c1", IfName: "eth0"}, {ContainerID: long.ContainerID, IfName: "eth0"}}
		return NFTables{}.GC(ctx, "testnet", valid)
	})
	got := masqRules(t, ns)
	want := []string{masqComment(attA), masqComment(attA), masqComment(other), masqComment(other), masqComment(long), masqComment(long)}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after GC, rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestMasqConcurrent: ADDs and DELs of different pods at the same time,
// each from its own process's view, lose none of each other's rules.
func TestMasqConcurrent(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "masq-conc")
	const pods = 24
	att := func(i int) Attachment {
		return Attachment{Network: "testnet", ContainerID: fmt.Sprintf("pod%02d", i), IfName: "eth0"}
	}
	addrs := func(i int) []netip.Prefix {
		return []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, 1, byte(10 + i)}), 24)}
	}
	// The odd pods exist before and go; the even ones come.
	do(t, ns, func(ctx context.Context) error {
		for i := 1; i < pods; i += 2 {
			if err := (NFTables{}).Setup(ctx, att(i), addrs(i)); err != nil {
				return err
			}
		}
		return nil
	})
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	for i := range pods {
		wg.Go(func() {
			errs <- netns.Do(ns.Path, func() error {
				if i%2 == 1 {
					return NFTables{}.Teardown(context.Background(), att(i))
				}
				return NFTables{}.Setup(context.Background(), att(i), addrs(i))
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	var want []string
	for i := 0; i < pods; i += 2 {
		want = append(want, masqComment(att(i)))
	}
	got := masqRules(t, ns)
	if len(got) != len(want) || !sameSet(got, want) {
		t.Fatalf("rules after the concurrent ADDs and DELs:\n%s\nwant the even pods':\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func sameSet(a, b []string) bool {
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestMasqSetupIsWhole: an ADD whose transaction the kernel refuses (here
// a postrouting chain of another type is in the way) changes nothing.
func TestMasqSetupIsWhole(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "masq-whole")
	nftLoad(t, ns, "add table inet cni_plugins_masquerade\nadd chain inet cni_plugins_masquerade postrouting { type filter hook postrouting priority 0 ; }\n")
	before := listMasq(t, ns)
	var err error
	ns.Do(t, func() error { err = NFTables{}.Setup(context.Background(), attA, dual); return nil })
	if err == nil {
		t.Fatal("Setup succeeded over a filter chain named postrouting")
	}
	if after := listMasq(t, ns); after != before {
		t.Fatalf("a failed Setup changed the table:\n%s\nwas:\n%s", after, before)
	}
}
