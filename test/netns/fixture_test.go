package netnstest

import (
	"slices"
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
