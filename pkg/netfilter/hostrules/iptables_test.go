package hostrules

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

var dualStack = Rules{
	Nets: []Net{
		{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.3.0/24")},
		{netip.MustParsePrefix("fd00:10::/56"), netip.MustParsePrefix("fd00:10:0:3::/64")},
	},
	Masq: true, Forward: true,
}

func TestFlannelRulesAreFlanneldsRules(t *testing.T) {
	// flanneld v0.28 pkg/trafficmngr/iptables, as iptables-save prints them.
	c := `-m comment --comment "flanneld masq"`
	want := []string{
		"-m mark --mark 0x4000/0x4000 " + c + " -j RETURN",
		"-s 10.244.3.0/24 -d 10.244.0.0/16 " + c + " -j RETURN",
		"-s 10.244.0.0/16 -d 10.244.3.0/24 " + c + " -j RETURN",
		"! -s 10.244.0.0/16 -d 10.244.3.0/24 " + c + " -j RETURN",
		"-s 10.244.0.0/16 ! -d 224.0.0.0/4 " + c + " -j MASQUERADE --random-fully",
		"! -s 10.244.0.0/16 -d 10.244.0.0/16 " + c + " -j MASQUERADE --random-fully",
	}
	chains := dualStack.iptablesChains(family.IPv4)
	if !slices.Equal(chains[0].rules, want) {
		t.Errorf("IPv4 masquerade rules:\n%s\nwant:\n%s", strings.Join(chains[0].rules, "\n"), strings.Join(want, "\n"))
	}
	if chains[0].jump() != c+" -j FLANNEL-POSTRTG" || chains[0].parent != "POSTROUTING" || chains[0].table != "nat" {
		t.Errorf("masquerade jump %+v", chains[0])
	}
	f := `-m comment --comment "flanneld forward"`
	if w := []string{"-s 10.244.0.0/16 " + f + " -j ACCEPT", "-d 10.244.0.0/16 " + f + " -j ACCEPT"}; !slices.Equal(chains[1].rules, w) {
		t.Errorf("forward rules %q", chains[1].rules)
	}
	v6 := dualStack.iptablesChains(family.IPv6)[0].rules
	if !strings.HasPrefix(v6[4], "-s fd00:10::/56 ! -d ff00::/8 ") {
		t.Errorf("IPv6 multicast exception: %q", v6[4])
	}
	plain := dualStack
	plain.NoRandomFully = true
	if r := plain.iptablesChains(family.IPv4)[0].rules[4]; !strings.HasSuffix(r, "-j MASQUERADE") {
		t.Errorf("NoRandomFully: %q", r)
	}
}

func TestFlannelRulesValidate(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		nets []Net
		want string
	}{
		{"subnet outside", []Net{{p("10.244.0.0/16"), p("10.245.3.0/24")}}, "not inside"},
		{"subnet larger", []Net{{p("10.244.0.0/16"), p("10.0.0.0/8")}}, "not inside"},
		{"families mixed", []Net{{p("10.244.0.0/16"), p("fd00::/64")}}, "not inside"},
		{"two of a family", []Net{{p("10.244.0.0/16"), p("10.244.3.0/24")}, {p("10.1.0.0/16"), p("10.1.3.0/24")}}, "one per family"},
		{"missing subnet", []Net{{Network: p("10.244.0.0/16")}}, "both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &iptablestest.Fake{}
			err := IPTables{Run: f}.Apply(context.Background(), Rules{Nets: tc.nets, Masq: true})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Apply = %v, want an error saying %q", err, tc.want)
			}
			if len(f.Restores) != 0 {
				t.Errorf("invalid rules were applied: %v", f.Restores)
			}
		})
	}
}

// saveOf renders what iptables-save would print after applying payload to
// an empty ruleset: the chains and rules, per table.
func saveOf(payload string) string {
	var out strings.Builder
	for section := range strings.SplitSeq(payload, "COMMIT\n") {
		lines := strings.Split(strings.TrimSpace(section), "\n")
		if len(lines) < 2 {
			continue
		}
		out.WriteString(lines[0] + "\n:POSTROUTING ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n")
		for _, l := range lines[1:] {
			out.WriteString(l + "\n")
		}
		out.WriteString("COMMIT\n")
	}
	return out.String()
}

func TestFlannelApplyCheckEnsure(t *testing.T) {
	ctx := context.Background()
	f := &iptablestest.Fake{Saved: map[string]string{}}
	h := IPTables{Run: f}
	if err := h.Apply(ctx, dualStack); err != nil {
		t.Fatal(err)
	}
	v4 := f.Payload("iptables-restore")
	for _, want := range []string{
		"*nat\n:FLANNEL-POSTRTG - [0:0]\n-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n",
		"COMMIT\n*filter\n:FLANNEL-FWD - [0:0]\n-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n",
	} {
		if !strings.Contains(v4, want) {
			t.Errorf("IPv4 payload lacks %q:\n%s", want, v4)
		}
	}
	if v6 := f.Payload("ip6tables-restore"); !strings.Contains(v6, "-d fd00:10:0:3::/64") || strings.Contains(v6, "10.244") {
		t.Errorf("IPv6 payload:\n%s", v6)
	}

	// What the payload made, read back: no drift, and Ensure writes nothing.
	f.Saved["iptables-save"], f.Saved["ip6tables-save"] = saveOf(v4), saveOf(f.Payload("ip6tables-restore"))
	f.Restores = nil
	if drift, err := h.Check(ctx, dualStack); err != nil || len(drift) != 0 {
		t.Fatalf("Check after Apply: %q, %v", drift, err)
	}
	if drift, err := h.Ensure(ctx, dualStack); err != nil || len(drift) != 0 || len(f.Restores) != 0 {
		t.Fatalf("Ensure without drift: %q, %v, restored %v", drift, err, f.Restores)
	}

	// Drift in IPv4 only: a lost rule and a doubled jump.
	good := f.Saved["iptables-save"]
	jump := "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n"
	f.Saved["iptables-save"] = strings.Replace(strings.Replace(good, "-A FLANNEL-FWD -d 10.244.0.0/16", "-A FLANNEL-FWD -d 10.99.0.0/16", 1), jump, jump+jump, 1)
	drift, err := h.Ensure(ctx, dualStack)
	if err != nil || len(drift) != 2 || !strings.Contains(drift[0], "IPv4 nat FLANNEL-POSTRTG: 2 jumps") || !strings.Contains(drift[1], "IPv4 filter FLANNEL-FWD: rules differ") {
		t.Errorf("drift = %q, %v", drift, err)
	}
	if f.Payload("ip6tables-restore") != "" || strings.Count(f.Payload("iptables-restore"), "-D POSTROUTING") != 2 {
		t.Errorf("repair payloads: %v", f.Restores)
	}
}

func TestFlannelTeardown(t *testing.T) {
	ctx := context.Background()
	f := &iptablestest.Fake{Saved: map[string]string{}}
	if err := (IPTables{Run: f}).Apply(ctx, dualStack); err != nil {
		t.Fatal(err)
	}
	f.Saved["iptables-save"] = saveOf(f.Payload("iptables-restore"))
	f.Restores = nil
	if err := (IPTables{Run: f}).Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	want := "*nat\n:FLANNEL-POSTRTG - [0:0]\n-D POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n-X FLANNEL-POSTRTG\nCOMMIT\n" +
		"*filter\n:FLANNEL-FWD - [0:0]\n-D FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n-X FLANNEL-FWD\nCOMMIT\n"
	if got := f.Payload("iptables-restore"); got != want {
		t.Errorf("teardown payload:\n%s\nwant:\n%s", got, want)
	}
	if f.Payload("ip6tables-restore") != "" {
		t.Error("restored IPv6, which had no rules")
	}
}

func TestFlannelErrors(t *testing.T) {
	ctx := context.Background()
	if err := (IPTables{Run: iptablestest.NotInstalled{}}).Teardown(ctx); err != nil {
		t.Errorf("Teardown without iptables: %v", err)
	}
	if err := (IPTables{Run: iptablestest.NotInstalled{}}).Apply(ctx, dualStack); !errors.Is(err, iptables.ErrNotInstalled) {
		t.Errorf("Apply without iptables: %v", err)
	}
	rf := &iptablestest.Fake{Fail: func(string, string) string {
		return `iptables-restore: exit status 2: unknown option "--random-fully"`
	}}
	if err := (IPTables{Run: rf}).Apply(ctx, dualStack); !errors.Is(err, ErrRandomFullyUnsupported) {
		t.Errorf("Apply on an iptables without --random-fully: %v", err)
	}
}
