package podfilter

import (
	"context"
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
	return &Conf{Attachment: att, Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00::5")}}
}

func TestTagRoundTrip(t *testing.T) {
	for _, a := range []Attachment{att, {"n", "id", `we"ird\if %x`}, {"", "", ""}, {"net", "c 1\t", "é"}} {
		tag := a.Tag()
		if strings.ContainsAny(tag, "\"\\\t") || strings.Count(tag, " ") != 6 {
			t.Errorf("tag %q is not seven plain words", tag)
		}
		if got, ok := parseTag(tag); !ok || got != a {
			t.Errorf("parseTag(%q) = %+v, %v", tag, got, ok)
		}
	}
	for _, c := range []string{"", "CNI firewall plugin admin overrides", "firewall name: n id: c", "firewall name: n id: c ifname: %zz", `dnat name: "n" id: "c" ifname: "eth0"`} {
		if a, ok := parseTag(c); ok {
			t.Errorf("%q parsed as the tag of %+v", c, a)
		}
	}
	long := Attachment{Network: strings.Repeat("n", 200), ContainerID: strings.Repeat("c", 64), IfName: "eth0"}
	if long.ValidTag() == nil || att.ValidTag() != nil {
		t.Error("ValidTag does not bound the tag")
	}
}

func FuzzParseTag(f *testing.F) {
	f.Add("net", "c1", "eth0")
	f.Fuzz(func(t *testing.T, n, id, ifName string) {
		a := Attachment{n, id, ifName}
		if got, ok := parseTag(a.Tag()); !ok || got != a {
			t.Fatalf("parseTag(Tag(%+v)) = %+v, %v", a, got, ok)
		}
		// What iptables-save prints comes back through the tokenizer too.
		toks := iptables.Tokenize("-A X " + commented(a.Tag()) + " -j Y")
		if len(toks) != 8 || toks[5] != a.Tag() {
			t.Fatalf("tokenized %q", toks)
		}
	})
}

// TestRules: the rules are the reference's, in iptables-save's spelling,
// with the attachment's tag on the pod's.
func TestRules(t *testing.T) {
	c := testConf()
	c.Isolation = &Isolation{Bridge: "cni0", Isolated: true}
	tag := `-m comment --comment "firewall name: net id: c1 ifname: eth0"`
	shared, pod := wanted(c, family.IPv4)
	want := []string{
		`-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD`,
		`-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN`,
		`-A FORWARD -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)" -j CNI-ISOLATION-STAGE-1`,
		`-A CNI-ISOLATION-STAGE-1 -i cni0 ! -o cni0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: isolated)" -j CNI-ISOLATION-STAGE-2`,
		`-A CNI-ISOLATION-STAGE-1 -i cni0 -o cni0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: isolated)" -j DROP`,
		`-A CNI-ISOLATION-STAGE-1 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)" -j RETURN`,
		`-A CNI-ISOLATION-STAGE-2 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)" -j RETURN`,
		`-A CNI-ISOLATION-STAGE-2 -o cni0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)" -j DROP`,
		"-A CNI-FORWARD -d 10.1.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED " + tag + " -j ACCEPT",
		"-A CNI-FORWARD -s 10.1.0.5/32 " + tag + " -j ACCEPT",
	}
	if got := append(lines("-A", shared), lines("-A", pod)...); !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	_, pod6 := wanted(c, family.IPv6)
	if len(pod6) != 2 || !strings.HasPrefix(pod6[0].spec, "-d fd00::5/128 ") {
		t.Errorf("IPv6 rules %v", pod6)
	}
	c.Isolation.Only = true
	if shared, pod := wanted(c, family.IPv4); len(pod) != 0 || slices.ContainsFunc(shared, func(r iptRule) bool { return r.chain == forwardChain }) {
		t.Errorf("isolation only: %v %v", shared, pod)
	}
}

// never is a QuickSweep that leaves every family to iptables.
func never(family.Family, func(string) bool, bool) bool { return false }

// always is a QuickSweep that finds nothing to delete.
func always(family.Family, func(string) bool, bool) bool { return true }

// TestAddFastPath: with nothing of the attachment left, an ADD is one
// restore per family that asserts the shared rules and appends the pod's,
// and reads nothing.
func TestAddFastPath(t *testing.T) {
	f := &iptablestest.Fake{}
	if err := (IPTables{Run: f, Quick: always}).Add(context.Background(), testConf()); err != nil {
		t.Fatal(err)
	}
	if len(f.Restores) != 2 || len(f.Saves) != 0 {
		t.Fatalf("%d restores and %d saves, want 2 and 0: %q", len(f.Restores), len(f.Saves), f.Restores)
	}
	want := "*filter\n-C FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n" +
		"-C CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN\n" +
		"-A CNI-FORWARD -d 10.1.0.5/32 "
	if v4 := f.Restored("iptables-restore")[0]; !strings.HasPrefix(v4, want) {
		t.Errorf("IPv4 payload:\n%s", v4)
	}
	if v6 := f.Restored("ip6tables-restore")[0]; !strings.Contains(v6, "-A CNI-FORWARD -s fd00::5/128 ") || strings.Contains(v6, "10.1.0.5") {
		t.Errorf("IPv6 payload:\n%s", v6)
	}
}

// saveLines wraps lines in an iptables-save filter table.
func saveLines(lines ...string) string {
	return "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n" + strings.Join(lines, "\n") + "\nCOMMIT\n"
}

// TestAddSlowPath: a first ADD on a node creates the chains with -N, puts
// the jumps first (CNI-FORWARD's after an isolation's), and replaces the
// attachment's earlier rules, keeping another interface's.
func TestAddSlowPath(t *testing.T) {
	eth1 := Attachment{"net", "c1", "eth1"}.Tag()
	tests := []struct {
		name  string
		saved []string
		has   []string
		not   []string
	}{
		{"first ADD", nil, []string{"-N CNI-FORWARD\n-N CNI-ADMIN\n-I FORWARD 1 ", "-I CNI-FORWARD 1 "}, []string{"-D "}},
		{"after an isolation", []string{":CNI-ISOLATION-STAGE-1 - [0:0]", "-A FORWARD -j DOCKER", "-A FORWARD -m comment --comment \"x\" -j CNI-ISOLATION-STAGE-1"},
			[]string{"-I FORWARD 3 -m comment --comment \"CNI firewall plugin rules\""}, nil},
		{"repeated ADD", []string{":CNI-FORWARD - [0:0]", ":CNI-ADMIN - [0:0]", `-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD`,
			`-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN`,
			"-A CNI-FORWARD -s 10.1.0.9/32 -m comment --comment " + iptables.Quote(att.Tag()) + " -j ACCEPT",
			"-A CNI-FORWARD -s 10.1.0.7/32 -m comment --comment " + iptables.Quote(eth1) + " -j ACCEPT"},
			[]string{"-D CNI-FORWARD -s 10.1.0.9/32", "-A CNI-FORWARD -s 10.1.0.5/32"}, []string{"-N ", "-I ", "10.1.0.7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": saveLines(tt.saved...)},
				Fail: func(_, payload string) string {
					if strings.Contains(payload, "-C ") {
						return "iptables-restore: line 2 failed"
					}
					return ""
				}}
			c := testConf()
			c.Addrs = c.Addrs[:1]
			if err := (IPTables{Run: f, Quick: never}).Add(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			got := f.Restored("iptables-restore")
			if len(got) != 1 {
				t.Fatalf("%d restores, want the planned one: %q", len(got), got)
			}
			for _, s := range tt.has {
				if !strings.Contains(got[0], s) {
					t.Errorf("payload lacks %q:\n%s", s, got[0])
				}
			}
			for _, s := range tt.not {
				if strings.Contains(got[0], s) {
					t.Errorf("payload has %q:\n%s", s, got[0])
				}
			}
		})
	}
}

// TestDelGC: DEL deletes the attachment's tagged rules and, given its
// addresses, the reference's untagged ones for them; GC deletes the
// network's rules of attachments not valid; neither touches anything else.
func TestDelGC(t *testing.T) {
	other := Attachment{"net", "c2", "eth0"}
	otherNet := Attachment{"net2", "c3", "eth0"}
	saved := saveLines(":CNI-FORWARD - [0:0]", ":CNI-ADMIN - [0:0]",
		`-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN`,
		"-A CNI-FORWARD -s 10.1.0.5/32 -m comment --comment "+iptables.Quote(att.Tag())+" -j ACCEPT",
		"-A CNI-FORWARD -s 10.1.0.6/32 -m comment --comment "+iptables.Quote(other.Tag())+" -j ACCEPT",
		"-A CNI-FORWARD -s 10.1.0.7/32 -m comment --comment "+iptables.Quote(otherNet.Tag())+" -j ACCEPT",
		"-A CNI-FORWARD -d 10.1.0.8/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-A CNI-FORWARD -s 10.1.0.8/32 -j ACCEPT",
		"-A CNI-FORWARD -s 10.1.0.9/32 -j ACCEPT")
	run := func(do func(IPTables) error) string {
		f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": saved}}
		if err := do(IPTables{Run: f, Quick: never}); err != nil {
			t.Fatal(err)
		}
		return f.Payload("iptables-restore")
	}
	del := run(func(h IPTables) error {
		return h.Del(context.Background(), att, []netip.Addr{netip.MustParseAddr("10.1.0.8")})
	})
	for _, s := range []string{"-D CNI-FORWARD -s 10.1.0.5/32", "-D CNI-FORWARD -d 10.1.0.8/32", "-D CNI-FORWARD -s 10.1.0.8/32 -j ACCEPT"} {
		if !strings.Contains(del, s) {
			t.Errorf("DEL lacks %q:\n%s", s, del)
		}
	}
	if strings.Count(del, "-D ") != 3 {
		t.Errorf("DEL deletes more than the attachment's:\n%s", del)
	}
	gc := run(func(h IPTables) error {
		return h.GC(context.Background(), "net", func(id, _ string) bool { return id == "c1" })
	})
	if !strings.Contains(gc, "-D CNI-FORWARD -s 10.1.0.6/32") || strings.Count(gc, "-D ") != 1 {
		t.Errorf("GC:\n%s", gc)
	}
	if none := run(func(h IPTables) error { return h.Del(context.Background(), Attachment{"net", "gone", "eth0"}, nil) }); none != "" {
		t.Errorf("DEL of an attachment without rules restored:\n%s", none)
	}
	f := iptablestest.NotInstalled{}
	if err := (IPTables{Run: f, Quick: never}).Del(context.Background(), att, nil); err != nil {
		t.Errorf("DEL without iptables: %v", err)
	}
}
