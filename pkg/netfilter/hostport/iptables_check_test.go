package hostport

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
	"github.com/cnisuite/cni/pkg/netfilter/iptablestest"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestRuleKey: a rule as iptablesRules writes it and as iptables-nft-save
// (v1.8.9) printed it back share a key; rules that differ in meaning do not.
func TestRuleKey(t *testing.T) {
	tag := `"dnat name: \"net\" id: \"c1\" ifname: \"eth0\""`
	same := [][2]string{
		{`-m comment --comment ` + tag + ` -p tcp --dport 8080 -s 10.1.0.0/24 -j CNI-HOSTPORT-SETMARK`,
			`-s 10.1.0.0/24 -p tcp -m comment --comment ` + tag + ` -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK`},
		{`-m comment --comment ` + tag + ` -p tcp --dport 8080 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK`,
			`-s 127.0.0.1/32 -p tcp -m comment --comment ` + tag + ` -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK`},
		{`-m comment --comment ` + tag + ` -p tcp --dport 8443 -d 192.0.2.1 -j DNAT --to-destination 10.1.0.5:443`,
			`-d 192.0.2.1/32 -p tcp -m comment --comment ` + tag + ` -m tcp --dport 8443 -j DNAT --to-destination 10.1.0.5:443`},
		{`-m comment --comment ` + tag + ` -p tcp --dport 9443 -d 2001:db8::1 -j DNAT --to-destination [fd00::5]:443`,
			`-d 2001:db8::1/128 -p tcp -m comment --comment ` + tag + ` -m tcp --dport 9443 -j DNAT --to-destination [fd00::5]:443`},
		{`-m comment --comment ` + tag + ` -m multiport -p tcp --destination-ports 8080,8443 ! -d 192.168.5.0/24 -m conntrack --ctstate NEW -i eth+ -j CNI-DN-623e1c388032b20529218`,
			`! -d 192.168.5.0/24 -i eth+ -p tcp -m comment --comment ` + tag + ` -m multiport --dports 8080,8443 -m conntrack --ctstate NEW -j CNI-DN-623e1c388032b20529218`},
		{`-m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000`,
			`-m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000`},
		{`--source 10.1.0.5/24 --protocol UDP --destination-port 53 --jump ACCEPT`, `-s 10.1.0.0/24 -p udp -m udp --dport 53 -j ACCEPT`},
	}
	for _, p := range same {
		if a, b := specKey(p[0]), specKey(p[1]); a != b {
			t.Errorf("keys differ:\n%s\n%s\n%q\n%q", p[0], p[1], a, b)
		}
	}
	base := `-m comment --comment ` + tag + ` -p tcp --dport 8080 -s 10.1.0.0/24 -j CNI-HOSTPORT-SETMARK`
	for _, other := range []string{
		`-m comment --comment ` + tag + ` -p tcp --dport 8081 -s 10.1.0.0/24 -j CNI-HOSTPORT-SETMARK`,
		`-m comment --comment ` + tag + ` -p udp --dport 8080 -s 10.1.0.0/24 -j CNI-HOSTPORT-SETMARK`,
		`-m comment --comment ` + tag + ` -p tcp --dport 8080 ! -s 10.1.0.0/24 -j CNI-HOSTPORT-SETMARK`,
		`-m comment --comment ` + tag + ` -p tcp --dport 8080 -s 10.1.0.0/16 -j CNI-HOSTPORT-SETMARK`,
		`-m comment --comment ` + tag + ` -p tcp --dport 8080 -s 10.1.0.0/24 -j KUBE-MARK-MASQ`,
		`-m comment --comment "other" -p tcp --dport 8080 -s 10.1.0.0/24 -j CNI-HOSTPORT-SETMARK`,
		`-m comment --comment ` + tag + ` -p tcp --dport 8080 -s 10.1.0.0/24 -m conntrack --ctstate NEW -j CNI-HOSTPORT-SETMARK`,
	} {
		if specKey(other) == specKey(base) {
			t.Errorf("same key for different rules:\n%s\n%s", base, other)
		}
	}
}

// checkTable is the nat table of `others` attachments of one mapping each
// and of c's attachment, as iptables-save lists it (each rule as written;
// TestRuleKey covers iptables' spellings), without the rules skip names.
func checkTable(c *Conf, addr netip.Prefix, others int, skip string) string {
	r := iptablesRules(c, addr)
	lines := []string{"*nat", ":" + r.chain + " - [0:0]", ":" + hostPortDNATChain + " - [0:0]"}
	for i := range others {
		o := &Conf{Attachment: Attachment{Network: "net", ContainerID: fmt.Sprintf("other%d", i), IfName: "eth0"},
			SNAT: true, MarkBit: 13, Maps: []PortMap{{HostPort: uint16(40000 + i), ContainerPort: 80, Protocol: "tcp"}}}
		or := iptablesRules(o, netip.MustParsePrefix(fmt.Sprintf("10.2.%d.%d/16", i/250, 1+i%250)))
		lines = append(lines, ":"+or.chain+" - [0:0]")
		for _, w := range or.all() {
			lines = append(lines, "-A "+w[0]+" "+w[1])
		}
	}
	for _, w := range r.all() {
		if line := "-A " + w[0] + " " + w[1]; skip == "" || !strings.Contains(line, skip) {
			lines = append(lines, line)
		}
	}
	return strings.Join(append(lines, "COMMIT"), "\n") + "\n"
}

// manyMaps is an attachment of n mappings.
func manyMaps(n int) *Conf {
	c := &Conf{Attachment: att, SNAT: true, MarkBit: 13}
	for i := range n {
		c.Maps = append(c.Maps, PortMap{HostPort: uint16(10000 + i), ContainerPort: 80, Protocol: "tcp"})
	}
	return c
}

// TestCheckLooksRulesUp: CHECK of an intact attachment, among other
// attachments' rules, is one read and no -C line (each of which costs
// iptables-nft a scan of the chain, which made CHECK quadratic); a missing
// rule alone is asked of iptables with -C, and named.
func TestCheckLooksRulesUp(t *testing.T) {
	addr := netip.MustParsePrefix("10.1.0.5/24")
	c := manyMaps(100)
	f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": checkTable(c, addr, 50, "")}}
	if err := (IPTables{Run: f}).Check(context.Background(), c, []netip.Prefix{addr}); err != nil {
		t.Fatal(err)
	}
	if len(f.Saves) != 1 || len(f.Restores) != 0 {
		t.Fatalf("intact CHECK: %d saves, %d restores (-C lines %q); want one save and no -C line", len(f.Saves), len(f.Restores), f.Restores)
	}

	gone := "--dport 10042 -j DNAT"
	f = &iptablestest.Fake{Saved: map[string]string{"iptables-save": checkTable(c, addr, 50, gone)},
		Fail: func(string, string) string {
			return "iptables-restore: line 2 failed: Bad rule (does a matching rule exist in that chain?)."
		}}
	err := (IPTables{Run: f}).Check(context.Background(), c, []netip.Prefix{addr})
	if err == nil || !strings.Contains(err.Error(), gone) {
		t.Fatalf("CHECK with a rule missing: %v; want it named", err)
	}
	if p := f.Restored("iptables-restore"); len(p) != 1 || strings.Count(p[0], "-C ") != 1 || !strings.Contains(p[0], gone) {
		t.Errorf("restores %q; want one with the missing rule's -C line alone", p)
	}
}

// TestCheckScalesLinearly counts, not times: CHECK of 4 times the mappings
// among 4 times the other attachments allocates about 4 times as much (16
// times were it quadratic), and leaves no -C line to iptables at any size.
func TestCheckScalesLinearly(t *testing.T) {
	addr := netip.MustParsePrefix("10.1.0.5/24")
	allocs := map[int]float64{}
	for _, n := range []int{250, 1000} {
		c := manyMaps(n)
		f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": checkTable(c, addr, n, "")}}
		h := IPTables{Run: f}
		allocs[n] = testing.AllocsPerRun(3, func() {
			if err := h.Check(context.Background(), c, []netip.Prefix{addr}); err != nil {
				t.Fatal(err)
			}
		})
		if len(f.Restores) != 0 {
			t.Fatalf("%d mappings: %d restores of -C lines, want none", n, len(f.Restores))
		}
	}
	t.Logf("allocations per CHECK by mappings: %v", allocs)
	if ratio := allocs[1000] / allocs[250]; ratio > 5 {
		t.Errorf("allocations grew %.1f times for 4 times the rules (%v), want about 4", ratio, allocs)
	}
}

// recorder runs the real binaries and keeps the restore payloads.
type recorder struct {
	mu       sync.Mutex
	restores []string
}

func (r *recorder) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	if strings.Contains(name, "restore") {
		r.mu.Lock()
		r.restores = append(r.restores, stdin)
		r.mu.Unlock()
	}
	return iptables.Exec{}.Run(ctx, stdin, name, args...)
}

// TestCheckReadsRealIptables: rules ADD made, with conditions, a host IP
// and both families, are all found by key in what the real iptables-save
// prints, so CHECK sends iptables no -C line; once a rule is deleted by
// hand, CHECK names it.
func TestCheckReadsRealIptables(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ns := netnstest.New(t, "nat-check")
	c := testConf()
	c.Conditions[family.IPv4] = []string{"!", "-d", "192.168.5.0/24", "-m", "conntrack", "--ctstate", "NEW", "-i", "eth+"}
	addrs := []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24"), netip.MustParsePrefix("fd00::5/64")}
	rec := &recorder{}
	h := IPTables{Run: rec}
	ns.Do(t, func() error {
		if err := h.Add(context.Background(), c, addrs); err != nil {
			return err
		}
		rec.restores = nil
		return h.Check(context.Background(), c, addrs)
	})
	if len(rec.restores) != 0 {
		t.Errorf("CHECK of intact rules sent -C lines, not found by key in iptables-save's output:\n%s", strings.Join(rec.restores, "\n"))
	}
	r := iptablesRules(c, addrs[0])
	ns.Run(t, "iptables", "-t", "nat", "-D", r.chain, "-s", "10.1.0.0/24", "-p", "tcp", "-m", "comment", "--comment", c.tag(),
		"-m", "tcp", "--dport", "8080", "-j", hostPortMarkChain)
	var err error
	ns.Do(t, func() error { err = h.Check(context.Background(), c, addrs); return nil })
	if err == nil || !strings.Contains(err.Error(), "--dport 8080 -s 10.1.0.0/24") {
		t.Fatalf("CHECK after a rule was deleted: %v; want the rule named", err)
	}
}
