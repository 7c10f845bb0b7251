package masq

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/iptables"
	"github.com/cnisuite/cni/pkg/netfilter/iptablestest"
)

func TestNamesMatchTheReference(t *testing.T) {
	// Values printed by containernetworking/plugins v1.9.1 pkg/utils.
	if got := ChainName("cbr0", "0123456789abcdef"); got != "CNI-8cbe06c6d4b297670ecbfdbd" {
		t.Errorf("ChainName = %s", got)
	}
	if got := comment("cbr0", "0123456789abcdef"); got != `name: "cbr0" id: "0123456789abcdef"` {
		t.Errorf("comment = %s", got)
	}
}

func saveWith(rules ...string) string {
	return "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n" + strings.Join(rules, "\n") + "\nCOMMIT\n"
}

func TestSetupIsOneTransactionPerFamily(t *testing.T) {
	chain := ChainName("net", "c1")
	stale := `-A POSTROUTING -s 10.1.0.9/32 -m comment --comment "name: \"net\" id: \"c1\"" -j ` + chain
	f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": saveWith(":"+chain+" - [0:0]", stale)}}
	addrs := []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24"), netip.MustParsePrefix("fd00::5/64")}
	if err := (IPTables{Run: f}).Setup(context.Background(), Attachment{Network: "net", ContainerID: "c1"}, addrs); err != nil {
		t.Fatal(err)
	}
	v4 := f.Payload("iptables-restore")
	c := `-m comment --comment "name: \"net\" id: \"c1\""`
	for _, want := range []string{
		"*nat\n:" + chain + " - [0:0]\n",
		"-D POSTROUTING -s 10.1.0.9/32 " + c + " -j " + chain,
		"-A " + chain + " -d 10.1.0.0/24 " + c + " -j ACCEPT",
		"-A " + chain + " ! -d 224.0.0.0/4 " + c + " -j MASQUERADE",
		"-A POSTROUTING -s 10.1.0.5/32 " + c + " -j " + chain,
		"COMMIT\n",
	} {
		if !strings.Contains(v4, want) {
			t.Errorf("IPv4 payload lacks %q:\n%s", want, v4)
		}
	}
	v6 := f.Payload("ip6tables-restore")
	if !strings.Contains(v6, "-d fd00::/64") || !strings.Contains(v6, "! -d ff00::/8") || strings.Contains(v6, "10.1") {
		t.Errorf("IPv6 payload:\n%s", v6)
	}
}

func TestTeardown(t *testing.T) {
	chain := ChainName("net", "c1")
	jump := `-A POSTROUTING -s 10.1.0.5/32 -m comment --comment "name: \"net\" id: \"c1\"" -j ` + chain
	f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": saveWith(":"+chain+" - [0:0]", jump, "-A "+chain+" -j MASQUERADE")}}
	if err := (IPTables{Run: f}).Teardown(context.Background(), Attachment{Network: "net", ContainerID: "c1"}); err != nil {
		t.Fatal(err)
	}
	want := "*nat\n:" + chain + " - [0:0]\n" + strings.Replace(jump, "-A ", "-D ", 1) + "\n-X " + chain + "\nCOMMIT\n"
	if got := f.Payload("iptables-restore"); got != want {
		t.Errorf("payload:\n%s\nwant:\n%s", got, want)
	}
	if f.Payload("ip6tables-restore") != "" {
		t.Error("restored IPv6 with nothing to remove")
	}
}

func TestGCKeepsValidAndForeignChains(t *testing.T) {
	rule := func(chain, net, id string) string {
		return "-A " + chain + " -m comment --comment " + iptables.Quote(comment(net, id)) + " -j MASQUERADE"
	}
	stale, keep, other := ChainName("net", "old"), ChainName("net", "live"), ChainName("othernet", "old")
	f := &iptablestest.Fake{Saved: map[string]string{"iptables-save": saveWith(
		":"+stale+" - [0:0]", ":"+keep+" - [0:0]", ":"+other+" - [0:0]", ":CNI-DN-portmap - [0:0]",
		rule(stale, "net", "old"), rule(keep, "net", "live"), rule(other, "othernet", "old"),
		rule("CNI-DN-portmap", "net", "old"), // same comment, not our chain name
		"-A POSTROUTING -s 10.0.0.2/32 -j "+stale,
	)}}
	if err := (IPTables{Run: f}).GC(context.Background(), "net", []netconf.Attachment{{ContainerID: "live"}}); err != nil {
		t.Fatal(err)
	}
	got := f.Payload("iptables-restore")
	if !strings.Contains(got, "-X "+stale) || !strings.Contains(got, "-D POSTROUTING -s 10.0.0.2/32 -j "+stale) {
		t.Errorf("stale chain not removed:\n%s", got)
	}
	for _, c := range []string{keep, other, "CNI-DN-portmap"} {
		if strings.Contains(got, c) {
			t.Errorf("GC touched %s:\n%s", c, got)
		}
	}
}

func TestParseComment(t *testing.T) {
	for _, tc := range [][2]string{{"net", "c1"}, {`we"ird\net`, "id.with-dots_1"}, {"", ""}} {
		n, id, ok := parseComment(comment(tc[0], tc[1]))
		if !ok || n != tc[0] || id != tc[1] {
			t.Errorf("parseComment(comment(%q, %q)) = %q, %q, %v", tc[0], tc[1], n, id, ok)
		}
	}
	if _, _, ok := parseComment("DNAT for portmap"); ok {
		t.Error("foreign comment parsed as ours")
	}
}

// A held xtables lock is "try again later" for the masquerade too.
func TestXtablesLockIsTryAgain(t *testing.T) {
	addrs := []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24")}
	a := Attachment{Network: "net", ContainerID: "c1"}
	f := &iptablestest.Fake{Fail: func(string, string) string {
		return "iptables-restore: exit status 4: Another app is currently holding the xtables lock. Stopped waiting after 10s."
	}}
	if err := (IPTables{Run: f}).Setup(context.Background(), a, addrs); !errors.Is(err, iptables.ErrXtablesLock) {
		t.Errorf("Setup with the lock held: %v, want ErrXtablesLock", err)
	}
	f = &iptablestest.Fake{Fail: func(string, string) string { return "iptables-restore: exit status 1: line 3 failed" }}
	if err := (IPTables{Run: f}).Setup(context.Background(), a, addrs); err == nil || errors.Is(err, iptables.ErrXtablesLock) {
		t.Errorf("another restore failure: %v, want an error that is not the lock's", err)
	}
}
