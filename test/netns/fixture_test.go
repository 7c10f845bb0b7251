package netnstest

import (
	"slices"
	"strings"
	"testing"
)

// TestLinkNames: link lines are read, with or without a peer, and ip's
// notes are not, also when one lands inside the listing.
func TestLinkNames(t *testing.T) {
	out := "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\n" +
		"2: Peer netns reference is invalid.\n" +
		"3: eth0@if7: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN\n" +
		"Peer netns reference is invalid.\n"
	if got, want := LinkNames(out), []string{"lo", "eth0"}; !slices.Equal(got, want) {
		t.Fatalf("LinkNames = %v, want %v", got, want)
	}
}

// TestLinksAsIP: a new namespace has loopback up; Links, which reads
// through netlink, lists what ip lists, all links and those of each kind
// the tests ask for.
func TestLinksAsIP(t *testing.T) {
	n := New(t, "cni-fixture")
	if lo := n.Run(t, "ip", "-o", "link", "show", "lo"); !strings.Contains(lo, ",UP") {
		t.Errorf("loopback of a new namespace: %s", lo)
	}
	n.Run(t, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	n.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	n.Run(t, "ip", "link", "add", "mv0", "link", "br0", "type", "macvlan")
	n.Run(t, "ip", "link", "add", "ifb0", "type", "ifb")
	n.Run(t, "ip", "tuntap", "add", "tap0", "mode", "tap")
	for _, args := range [][]string{nil, {"type", "veth"}, {"type", "bridge"}, {"type", "macvlan"}, {"type", "ifb"}, {"type", "tun"}} {
		want := LinkNames(n.Run(t, append([]string{"ip", "-o", "link", "show"}, args...)...))
		if got := n.Links(t, args...); !slices.Equal(got, want) || len(want) == 0 {
			t.Errorf("Links(%q) = %v, ip lists %v", args, got, want)
		}
	}
}
