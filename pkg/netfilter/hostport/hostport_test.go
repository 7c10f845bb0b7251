package hostport

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
	"github.com/cnisuite/cni/pkg/netfilter/iptablestest"
)

var att = Attachment{Network: "net", ContainerID: "c1", IfName: "eth0"}

func testConf() *Conf {
	return &Conf{
		Attachment: att, SNAT: true, MarkBit: 13,
		Maps: []PortMap{
			{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
			{HostPort: 8081, ContainerPort: 81, Protocol: "udp"},
			{HostPort: 8443, ContainerPort: 443, Protocol: "tcp", HostIP: netip.MustParseAddr("192.0.2.1")},
			{HostPort: 9443, ContainerPort: 443, Protocol: "tcp", HostIP: netip.MustParseAddr("2001:db8::1")},
		},
	}
}

func TestHostPortNamesMatchTheReference(t *testing.T) {
	// Printed by containernetworking/plugins v1.9.1 pkg/utils.MustFormatChainNameWithPrefix.
	if got := dnatChainName("cbr0", "0123456789abcdef"); got != "CNI-DN-8cbe06c6d4b297670ecbf" {
		t.Errorf("DNATChainName = %s", got)
	}
	if got := hashedChain(oldSNATPrefix, "cbr0", "0123456789abcdef"); got != "CNI-SN-8cbe06c6d4b297670ecbf" {
		t.Errorf("old SNAT chain = %s", got)
	}
}

func TestTagRoundTrip(t *testing.T) {
	for _, a := range []Attachment{att, {"n", "id", `we"ird\if`}, {"", "", ""}} {
		got, ok := parseTag(a.tag())
		if !ok || got != a {
			t.Errorf("parseTag(%q) = %+v, %v", a.tag(), got, ok)
		}
	}
	// The reference tags only the entry rule, without an interface name.
	if got, ok := parseTag(`dnat name: "net" id: "c1"`); !ok || got != (Attachment{"net", "c1", ""}) || !att.owns(got) {
		t.Errorf("reference tag parsed as %+v, %v", got, ok)
	}
	if _, ok := parseTag(`name: "net" id: "c1"`); ok {
		t.Error("bridge's masquerade comment parsed as a port-mapping tag")
	}
	if (Attachment{"net", "c1", "eth1"}).owns(att) {
		t.Error("eth1 owns eth0's rules")
	}
}

func FuzzParseTag(f *testing.F) {
	f.Add("net", "c1", "eth0")
	f.Fuzz(func(t *testing.T, n, id, ifName string) {
		a := Attachment{n, id, ifName}
		if strings.ContainsAny(a.tag(), "\n\r") {
			return
		}
		got, ok := parseTag(a.tag())
		if !ok || got != a {
			t.Fatalf("parseTag(tag(%+v)) = %+v, %v", a, got, ok)
		}
		// What iptables-save prints comes back through the tokenizer too.
		toks := iptables.Tokenize("-A X -m comment --comment " + iptables.Quote(a.tag()) + " -j Y")
		if len(toks) != 8 || toks[5] != a.tag() {
			t.Fatalf("tokenized %q", toks)
		}
	})
}

func TestBuildRules(t *testing.T) {
	c := testConf()
	tag := `-m comment --comment "dnat name: \"net\" id: \"c1\" ifname: \"eth0\""`
	r := iptablesRules(c, netip.MustParsePrefix("10.1.0.5/24"))
	want := []string{
		tag + " -p tcp --dport 8080 -s 10.1.0.0/24 -j CNI-HOSTPORT-SETMARK",
		tag + " -p tcp --dport 8080 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
		tag + " -p tcp --dport 8080 -j DNAT --to-destination 10.1.0.5:80",
		tag + " -p udp --dport 8081 -s 10.1.0.0/24 -j CNI-HOSTPORT-SETMARK",
		tag + " -p udp --dport 8081 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
		tag + " -p udp --dport 8081 -j DNAT --to-destination 10.1.0.5:81",
		tag + " -p tcp --dport 8443 -d 192.0.2.1 -s 10.1.0.0/24 -j CNI-HOSTPORT-SETMARK",
		tag + " -p tcp --dport 8443 -d 192.0.2.1 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
		tag + " -p tcp --dport 8443 -d 192.0.2.1 -j DNAT --to-destination 10.1.0.5:443",
	}
	if !slices.Equal(r.rules, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(r.rules, "\n"), strings.Join(want, "\n"))
	}
	wantEntries := []string{
		tag + " -m multiport -p tcp --destination-ports 8080,8443 -j " + r.chain,
		tag + " -m multiport -p udp --destination-ports 8081 -j " + r.chain,
	}
	if !slices.Equal(r.entries, wantEntries) || !r.ownMasq || r.mark != "0x2000/0x2000" {
		t.Errorf("entries %q, ownMasq %v, mark %s", r.entries, r.ownMasq, r.mark)
	}
}

func TestBuildRulesVariants(t *testing.T) {
	v6 := netip.MustParsePrefix("fd00::5/64")
	tests := []struct {
		name   string
		edit   func(*Conf)
		prefix netip.Prefix
		has    []string
		hasNot []string
	}{
		{"IPv6 skips localhost and IPv4 host IPs", nil, v6,
			[]string{"-s fd00::/64 -j CNI-HOSTPORT-SETMARK", "-d 2001:db8::1 -j DNAT --to-destination [fd00::5]:443", "--destination-ports 8080,9443 "},
			[]string{"127.0.0.1", "192.0.2.1", "8443"}},
		{"masqAll", func(c *Conf) { c.MasqAll = true }, netip.MustParsePrefix("10.1.0.5/24"),
			[]string{"-s 0.0.0.0/0 -j CNI-HOSTPORT-SETMARK"}, []string{"127.0.0.1", "10.1.0.0/24"}},
		{"no snat", func(c *Conf) { c.SNAT = false }, netip.MustParsePrefix("10.1.0.5/24"),
			[]string{"-j DNAT"}, []string{"SETMARK"}},
		{"external mark chain", func(c *Conf) { c.ExternalSetMarkChain = "KUBE-MARK-MASQ" }, netip.MustParsePrefix("10.1.0.5/24"),
			[]string{"-j KUBE-MARK-MASQ"}, []string{"CNI-HOSTPORT-SETMARK"}},
		{"conditions", func(c *Conf) {
			c.Conditions[family.IPv4] = []string{"!", "-s", "192.0.2.0/24", "-m", "comment", "--comment", "two words"}
		},
			netip.MustParsePrefix("10.1.0.5/24"), []string{`--destination-ports 8080,8443 ! -s 192.0.2.0/24 -m comment --comment "two words" -j CNI-DN-`}, nil},
		{"mark bit", func(c *Conf) { c.MarkBit = 0 }, netip.MustParsePrefix("10.1.0.5/24"), []string{"0x1/0x1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConf()
			if tt.edit != nil {
				tt.edit(c)
			}
			r := iptablesRules(c, tt.prefix)
			all := strings.Join(append(append(r.rules, r.entries...), strings.Join(r.fastLines(), "\n")), "\n")
			for _, s := range tt.has {
				if !strings.Contains(all, s) {
					t.Errorf("lacks %q:\n%s", s, all)
				}
			}
			for _, s := range tt.hasNot {
				if strings.Contains(all, s) {
					t.Errorf("has %q:\n%s", s, all)
				}
			}
		})
	}
}

// TestAddFastPath: with the shared chains in place an ADD is one restore
// per family that asserts them and creates the attachment's chain, and
// reads nothing.
func TestAddFastPath(t *testing.T) {
	f := &iptablestest.Fake{}
	addrs := []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24"), netip.MustParsePrefix("fd00::5/64")}
	if err := (IPTables{Run: f}).Add(context.Background(), testConf(), addrs); err != nil {
		t.Fatal(err)
	}
	if len(f.Restores) != 2 {
		t.Fatalf("%d commands run, want 2 restores: %q", len(f.Restores), f.Restores)
	}
	v4 := f.Restored("iptables-restore")[0]
	chain := dnatChainName("net", "c1")
	for _, want := range []string{
		"*nat\n-C PREROUTING " + dstLocalSpec + "\n-C OUTPUT " + dstLocalSpec + "\n",
		"-C POSTROUTING " + masqJumpSpec(), "-C CNI-HOSTPORT-SETMARK " + markRuleSpec("0x2000/0x2000"),
		"-C CNI-HOSTPORT-MASQ " + masqRuleSpec("0x2000/0x2000"), "\n-N " + chain + "\n", "-A CNI-HOSTPORT-DNAT ", "COMMIT\n",
	} {
		if !strings.Contains(v4, want) {
			t.Errorf("IPv4 payload lacks %q:\n%s", want, v4)
		}
	}
	if v6 := f.Restored("ip6tables-restore")[0]; !strings.Contains(v6, "[fd00::5]:443") || strings.Contains(v6, "10.1.0.5") {
		t.Errorf("IPv6 payload:\n%s", v6)
	}
}

// saveLines wraps rules in an iptables-save nat table.
func saveLines(lines ...string) string {
	return "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n" +
		strings.Join(lines, "\n") + "\nCOMMIT\n"
}

// TestAddSlowPath: when an assertion fails the ADD reads the table,
// creates the missing shared chains with -N (which fails rather than
// flushes if another ADD made them meanwhile), replaces the attachment's
// own earlier rules and keeps those of its other interface.
func TestAddSlowPath(t *testing.T) {
	chain := dnatChainName("net", "c1")
	eth1 := iptables.Quote(Attachment{"net", "c1", "eth1"}.tag())
	old := iptables.Quote(att.tag())
	f := &iptablestest.Fake{
		Saved: map[string]string{"iptables-save": saveLines(
			":"+chain+" - [0:0]",
			"-A "+chain+" -p tcp -m comment --comment "+old+" -m tcp --dport 7070 -j DNAT --to-destination 10.1.0.5:70",
			"-A "+chain+" -p tcp -m comment --comment "+eth1+" -m tcp --dport 6060 -j DNAT --to-destination 10.2.0.5:60",
		)},
		Fail: func(_, payload string) string {
			if strings.Contains(payload, "-C PREROUTING") {
				return "iptables-restore: line 2 failed: Bad rule (does a matching rule exist in that chain?)."
			}
			return ""
		},
	}
	err := (IPTables{Run: f}).Add(context.Background(), testConf(), []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24")})
	if err != nil {
		t.Fatal(err)
	}
	got := f.Restored("iptables-restore")
	if len(got) != 2 {
		t.Fatalf("want the fast path then one planned restore, got %d:\n%s", len(got), strings.Join(got, "---\n"))
	}
	p := got[1]
	for _, want := range []string{
		"-N CNI-HOSTPORT-DNAT\n-A PREROUTING " + dstLocalSpec + "\n-A OUTPUT " + dstLocalSpec,
		"-N CNI-HOSTPORT-SETMARK\n-A CNI-HOSTPORT-SETMARK " + markRuleSpec("0x2000/0x2000"),
		"-N CNI-HOSTPORT-MASQ\n-A CNI-HOSTPORT-MASQ " + masqRuleSpec("0x2000/0x2000"),
		"-I POSTROUTING 1 " + masqJumpSpec(),
		"-D " + chain + " -p tcp -m comment --comment " + old + " -m tcp --dport 7070",
		"-A " + chain + " -m comment --comment " + old + " -p tcp --dport 8080",
	} {
		if !strings.Contains(p, want) {
			t.Errorf("payload lacks %q:\n%s", want, p)
		}
	}
	if strings.Contains(p, "6060") || strings.Contains(p, "-N "+chain) || strings.Contains(p, ":"+chain) {
		t.Errorf("payload touches eth1's rule or redeclares the chain:\n%s", p)
	}
}

// TestAddRetriesOnConflict: a planned restore that loses a race is
// re-planned from a fresh read; a persistent failure is reported with the
// rule the kernel refused.
func TestAddRetriesOnConflict(t *testing.T) {
	failures := 2
	f := &iptablestest.Fake{Fail: func(_, payload string) string {
		if strings.Contains(payload, "-C ") {
			return "line 2 failed"
		}
		if failures > 0 {
			failures--
			return "iptables-restore: line 1 failed: Chain already exists."
		}
		return ""
	}}
	c, addrs := testConf(), []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24")}
	if err := (IPTables{Run: f}).Add(context.Background(), c, addrs); err != nil || len(f.Restores) != 4 {
		t.Fatalf("err %v after %d restores, want success after 4", err, len(f.Restores))
	}
	f = &iptablestest.Fake{Fail: func(_, payload string) string { return "iptables-restore: line 2 failed: Couldn't load target `NOPE'" }}
	err := (IPTables{Run: f}).Add(context.Background(), c, addrs)
	if err == nil || !strings.Contains(err.Error(), "NOPE") || len(f.Restores) != 1+iptables.MaxAttempts {
		t.Fatalf("err %v after %d restores", err, len(f.Restores))
	}
}

// refChain is a chain as the reference portmap leaves it: tagged entry
// rules, untagged rules inside.
func refChain(network, id string, port string) []string {
	chain := dnatChainName(network, id)
	tag := iptables.Quote(`dnat name: "` + network + `" id: "` + id + `"`)
	return []string{
		":" + chain + " - [0:0]",
		"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment " + tag + " -m multiport --dports " + port + " -j " + chain,
		"-A " + chain + " -p tcp -m tcp --dport " + port + " -j DNAT --to-destination 10.1.0.9:80",
		"-A " + chain + " -s 10.1.0.0/24 -p tcp -m tcp --dport " + port + " -j CNI-HOSTPORT-SETMARK",
	}
}

var plumbing = []string{
	":CNI-HOSTPORT-DNAT - [0:0]", ":CNI-HOSTPORT-MASQ - [0:0]", ":CNI-HOSTPORT-SETMARK - [0:0]",
	"-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
	"-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
	`-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ`,
	"-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
	`-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000`,
}

func TestDel(t *testing.T) {
	mine := refChain("net", "c1", "8080")
	other := refChain("net", "c2", "9090")
	tests := []struct {
		name     string
		rules    []string
		want     []string // in order
		wantNot  []string
		noChange bool
	}{
		{"last attachment takes the shared chains along", append(append([]string{}, plumbing...), mine...),
			[]string{"-D CNI-HOSTPORT-DNAT ", "-X " + dnatChainName("net", "c1"), "-D PREROUTING ", "-X CNI-HOSTPORT-DNAT",
				"-D CNI-HOSTPORT-SETMARK ", "-X CNI-HOSTPORT-SETMARK", "-D POSTROUTING ", "-X CNI-HOSTPORT-MASQ"}, nil, false},
		{"others keep the shared chains", append(append(append([]string{}, plumbing...), mine...), other...),
			[]string{"-X " + dnatChainName("net", "c1")}, []string{"CNI-HOSTPORT-DNAT\n", "-X CNI-HOSTPORT", dnatChainName("net", "c2")}, false},
		{"nothing of this attachment", append(append([]string{}, plumbing...), other...), nil, nil, true},
		{"old SNAT chain of early releases", []string{":" + hashedChain(oldSNATPrefix, "net", "c1") + " - [0:0]",
			"-A " + hashedChain(oldSNATPrefix, "net", "c1") + " -j MASQUERADE"},
			[]string{"-X " + hashedChain(oldSNATPrefix, "net", "c1")}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": saveLines(tt.rules...)}}
			if err := (IPTables{Run: f, quick: noQuick}).Del(context.Background(), &Conf{Attachment: att}, nil); err != nil {
				t.Fatal(err)
			}
			got := f.Restored("iptables-restore")
			if tt.noChange {
				if len(got) != 0 {
					t.Fatalf("restored with nothing to remove:\n%s", got[0])
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d restores", len(got))
			}
			at := 0
			for _, w := range tt.want {
				i := strings.Index(got[0][at:], w)
				if i < 0 {
					t.Fatalf("payload lacks %q after offset %d:\n%s", w, at, got[0])
				}
				at += i + len(w)
			}
			for _, w := range tt.wantNot {
				if strings.Contains(got[0], w) {
					t.Errorf("payload has %q:\n%s", w, got[0])
				}
			}
		})
	}
}

func TestGC(t *testing.T) {
	tagged := func(a Attachment, port string) []string {
		chain := dnatChainName(a.Network, a.ContainerID)
		return []string{":" + chain + " - [0:0]",
			"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment " + iptables.Quote(a.tag()) + " -m multiport --dports " + port + " -j " + chain,
			"-A " + chain + " -p tcp -m comment --comment " + iptables.Quote(a.tag()) + " -m tcp --dport " + port + " -j DNAT --to-destination 10.1.0.9:80"}
	}
	stale, live, otherNet := Attachment{"net", "gone", "eth0"}, Attachment{"net", "live", "eth0"}, Attachment{"other", "gone", "eth0"}
	rules := slices.Concat(plumbing, tagged(stale, "1"), tagged(live, "2"), tagged(otherNet, "3"), refChain("net", "refgone", "4"), refChain("net", "live", "5"))
	f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": saveLines(rules...)}}
	valid := func(id, ifName string) bool { return id == "live" && (ifName == "" || ifName == "eth0") }
	if err := (IPTables{Run: f, quick: noQuick}).GC(context.Background(), "net", valid); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(f.Restored("iptables-restore"), "")
	for _, c := range []string{dnatChainName("net", "gone"), dnatChainName("net", "refgone")} {
		if !strings.Contains(got, "-X "+c) {
			t.Errorf("stale chain %s kept:\n%s", c, got)
		}
	}
	for _, c := range []string{dnatChainName("net", "live"), dnatChainName("other", "gone"), "CNI-HOSTPORT"} {
		if strings.Contains(got, c+"\n") || strings.Contains(got, "-X "+c) {
			t.Errorf("GC touched %s:\n%s", c, got)
		}
	}
}

// TestCheckNamesTheMissingRule: CHECK is one restore of -C lines, and the
// line iptables-restore rejects becomes the rule in the message.
func TestCheckNamesTheMissingRule(t *testing.T) {
	f := &iptablestest.Fake{Fail: func(_, payload string) string {
		return "iptables-restore: line 4 failed: Bad rule (does a matching rule exist in that chain?)."
	}}
	err := (IPTables{Run: f}).Check(context.Background(), testConf(), []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24")})
	if err == nil || !strings.Contains(err.Error(), masqJumpComment) {
		t.Fatalf("CHECK error %v does not name the POSTROUTING rule (payload line 4)", err)
	}
	if p := f.Restored("iptables-restore")[0]; strings.Contains(p, "-A ") || strings.Contains(p, "-N ") {
		t.Errorf("CHECK changes rules:\n%s", p)
	}
}

func TestNotInstalled(t *testing.T) {
	h := IPTables{Run: iptablestest.NotInstalled{}, quick: noQuick}
	if err := h.Add(context.Background(), testConf(), []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24")}); !errors.Is(err, iptables.ErrNotInstalled) {
		t.Errorf("ADD: %v", err)
	}
	if err := h.Del(context.Background(), &Conf{Attachment: att}, nil); err != nil {
		t.Errorf("DEL without iptables: %v; nothing can exist then", err)
	}
}

// noQuick cannot look at the kernel: every DEL reads the table.
func noQuick(family.Family, Attachment) bool { return false }

// A held xtables lock is "try again later" for port mappings, and they do
// not wait for it once per retry.
func TestXtablesLockIsTryAgain(t *testing.T) {
	f := &iptablestest.Fake{Fail: func(string, string) string {
		return "iptables-restore: exit status 4: Another app is currently holding the xtables lock. Stopped waiting after 10s."
	}}
	err := IPTables{Run: f, quick: noQuick}.Add(context.Background(), testConf(), []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24")})
	if !errors.Is(err, iptables.ErrXtablesLock) {
		t.Errorf("ADD with the lock held: %v, want ErrXtablesLock", err)
	}
	if n := len(f.Restored("iptables-restore")); n != 1 {
		t.Errorf("%d restores with the lock held, want 1 (each waits 10 s)", n)
	}
}
