package firewall

import (
	"context"
	"strings"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// routed builds a pod and a peer namespace on either side of a router
// namespace (the node) that forwards between them, IPv4 and IPv6:
// pod 10.1.0.5 / fd00:1::5, peer 10.2.0.5 / fd00:2::5.
func routed(t *testing.T) (router, pod, peer *netnstest.NS) {
	router, pod, peer = netnstest.New(t, "fw-router"), netnstest.New(t, "fw-pod"), netnstest.New(t, "fw-peer")
	router.Run(t, "ip", "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", pod.Name)
	router.Run(t, "ip", "link", "add", "vpeer", "type", "veth", "peer", "name", "eth0", "netns", peer.Name)
	for _, c := range []struct {
		ns   *netnstest.NS
		args []string
	}{
		{router, []string{"sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"}},
		{router, []string{"ip", "addr", "add", "10.1.0.1/24", "dev", "vpod"}},
		{router, []string{"ip", "addr", "add", "fd00:1::1/64", "dev", "vpod", "nodad"}},
		{router, []string{"ip", "addr", "add", "10.2.0.1/24", "dev", "vpeer"}},
		{router, []string{"ip", "addr", "add", "fd00:2::1/64", "dev", "vpeer", "nodad"}},
		{router, []string{"ip", "link", "set", "vpod", "up"}},
		{router, []string{"ip", "link", "set", "vpeer", "up"}},
		{pod, []string{"ip", "addr", "add", "10.1.0.5/24", "dev", "eth0"}},
		{pod, []string{"ip", "addr", "add", "fd00:1::5/64", "dev", "eth0", "nodad"}},
		{pod, []string{"ip", "link", "set", "eth0", "up"}},
		{pod, []string{"ip", "route", "add", "default", "via", "10.1.0.1"}},
		{pod, []string{"ip", "-6", "route", "add", "default", "via", "fd00:1::1"}},
		{peer, []string{"ip", "addr", "add", "10.2.0.5/24", "dev", "eth0"}},
		{peer, []string{"ip", "addr", "add", "fd00:2::5/64", "dev", "eth0", "nodad"}},
		{peer, []string{"ip", "link", "set", "eth0", "up"}},
		{peer, []string{"ip", "route", "add", "default", "via", "10.2.0.1"}},
		{peer, []string{"ip", "-6", "route", "add", "default", "via", "fd00:2::1"}},
	} {
		c.ns.Run(t, c.args...)
	}
	return router, pod, peer
}

// reaches tells whether from gets an answer from to.
func reaches(from *netnstest.NS, to string) bool {
	_, err := from.Try("ping", "-c", "1", "-W", "1", to)
	return err == nil
}

// TestTraffic: behind a router whose forward policy drops, the pod cannot
// reach the peer; after ADD it can, over both families, and the replies
// come back (a connection the peer starts stays dropped); after DEL it
// cannot again, and exactly this attachment's rules are gone while
// another attachment's stay. With iptables the drop is FORWARD's policy;
// with nftables it is the policy the admin set on the table's FORWARD.
func TestTraffic(t *testing.T) {
	podPrev := `{"cniVersion":"1.1.0","interfaces":[{"name":"vpod"}],"ips":[{"address":"10.1.0.5/24"},{"address":"fd00:1::5/64"}]}`
	otherPrev := `{"cniVersion":"1.1.0","interfaces":[{"name":"vpod"}],"ips":[{"address":"10.1.0.9/24"}]}`
	for _, tc := range []struct {
		backend string
		drop    [][]string
	}{
		{"iptables", [][]string{{"iptables", "-P", "FORWARD", "DROP"}, {"ip6tables", "-P", "FORWARD", "DROP"}}},
		{"nftables", [][]string{{"nft", "add table inet cnisuite_firewall"},
			{"nft", "add chain inet cnisuite_firewall FORWARD { type filter hook forward priority filter ; policy drop ; }"}}},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			router, pod, peer := routed(t)
			for _, c := range tc.drop {
				router.Run(t, c...)
			}
			p, ctx := &Plugin{}, context.Background()
			conf := confWith(`"backend":"`+tc.backend+`",`, podPrev)
			other := args(confWith(`"backend":"`+tc.backend+`",`, otherPrev))
			other.ContainerID = "c2"
			for _, to := range []string{"10.2.0.5", "fd00:2::5"} {
				if reaches(pod, to) {
					t.Fatalf("the pod reaches %s before ADD: the drop policy proves nothing", to)
				}
			}
			router.Do(t, func() error { _, err := p.Add(ctx, other); return err })
			router.Do(t, func() error { _, err := p.Add(ctx, args(conf)); return err })
			for _, to := range []string{"10.2.0.5", "fd00:2::5"} {
				if !reaches(pod, to) {
					t.Errorf("after ADD the pod does not reach %s", to)
				}
			}
			if reaches(peer, "10.1.0.5") {
				t.Error("after ADD the peer starts connections to the pod: only replies may come in")
			}
			before := ruleset(t, router)
			router.Do(t, func() error { return p.Del(ctx, args(conf)) })
			for _, to := range []string{"10.2.0.5", "fd00:2::5"} {
				if reaches(pod, to) {
					t.Errorf("after DEL the pod still reaches %s", to)
				}
			}
			after := ruleset(t, router)
			if strings.Contains(after, "id: c1 ") || strings.Count(after, "id: c2 ") != strings.Count(before, "id: c2 ") || strings.Count(after, "id: c2 ") != 2 {
				t.Errorf("after DEL of c1, the rules are:\n%s\nbefore:\n%s", after, before)
			}
			if gone := removedLines(before, after); len(gone) != 4 {
				t.Errorf("DEL removed %d lines, want c1's 4:\n%s", len(gone), strings.Join(gone, "\n"))
			}
		})
	}
}

// removedLines lists the lines of before that after lacks.
func removedLines(before, after string) []string {
	have := map[string]int{}
	for l := range strings.Lines(after) {
		have[l]++
	}
	var out []string
	for l := range strings.Lines(before) {
		if have[l] > 0 {
			have[l]--
			continue
		}
		out = append(out, strings.TrimSpace(l))
	}
	return out
}
