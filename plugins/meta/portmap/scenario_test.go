package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
)

// TestNodeLife is a node's life with port mappings, for each backend: two
// pods mapped, reached from outside (TCP and UDP, IPv4 and IPv6), from
// another pod through the node (hairpin) and from the node's loopback;
// hostIP restricting a mapping; CHECK noticing a missing rule; DEL without
// runtimeConfig leaving the other pod working; GC; and at the end the
// node's ruleset as it was before portmap ran.
func TestNodeLife(t *testing.T) {
	for _, backend := range []string{backendIPTables, backendNFTables} {
		t.Run(backend, func(t *testing.T) {
			n := newNode(t, backend)
			a, b := n.addPod("pod-a"), n.addPod("pod-b")
			before := n.ruleset()

			mapsA := []map[string]any{
				mapping(8080, 80, "tcp", ""), mapping(8081, 81, "udp", ""),
				mapping(8082, 82, "tcp", nodeV4), mapping(8083, 82, "tcp", nodeV6),
			}
			confA, confB := n.portmapConf(a, mapsA), n.portmapConf(b, []map[string]any{mapping(9080, 80, "tcp", "")})
			// UDP flows to the port from before the mapping: their conntrack
			// entries say "no DNAT" until ADD deletes them.
			early := []net.Conn{udpFlow(t, n.out, nodeV4+":8081"), udpFlow(t, n.out, "["+nodeV6+"]:8081")}
			res := n.mustCall("portmap", "ADD", a, confA)
			if !strings.Contains(res, a.v4.String()) {
				t.Fatalf("ADD did not pass the prevResult through:\n%s", res)
			}
			n.mustCall("portmap", "ADD", b, confB)
			n.mustCall("portmap", "CHECK", a, confA)
			n.mustCall("portmap", "CHECK", b, confB)

			t.Run("stale UDP conntrack", func(t *testing.T) {
				for _, c := range early {
					if got, err := exchange(c); err != nil || !strings.HasPrefix(got, "pod-a ") {
						t.Errorf("UDP flow to %s that began before ADD: got %q, %v; want pod-a", c.RemoteAddr(), got, err)
					}
				}
			})
			t.Run("outside", func(t *testing.T) { fromOutside(t, n) })
			t.Run("hostIP", func(t *testing.T) { hostIPOnly(t, n) })
			t.Run("hairpin", func(t *testing.T) {
				for _, ip := range []string{nodeV4, nodeV6} {
					peer := reaches(t, b.ns, "tcp", net.JoinHostPort(ip, "8080"), "pod-a")
					if host, _, _ := net.SplitHostPort(peer); host == b.v4.String() || host == b.v6.String() {
						t.Errorf("hairpin connection arrived from %s unmasqueraded", peer)
					}
				}
			})
			t.Run("localhost", func(t *testing.T) { reaches(t, n.ns, "tcp", "127.0.0.1:8080", "pod-a") })
			t.Run("check notices", func(t *testing.T) { checkNotices(t, n, a, confA) })

			// DEL as a runtime that forgot the mappings (and the prevResult).
			n.mustCall("portmap", "DEL", a, n.portmapConf(nil, nil))
			unreachable(t, n.out, nodeV4+":8080")
			reaches(t, n.out, "tcp", nodeV4+":9080", "pod-b")
			n.mustCall("portmap", "DEL", a, n.portmapConf(nil, nil)) // idempotent

			// GC with only b valid collects a's rules, then with none b's.
			n.mustCall("portmap", "ADD", a, confA)
			gc := n.portmapConf(nil, nil)
			gc["cni.dev/valid-attachments"] = []map[string]string{{"containerID": "pod-b", "ifname": "eth0"}}
			n.mustCall("portmap", "GC", a, gc)
			unreachable(t, n.out, nodeV4+":8080")
			reaches(t, n.out, "tcp", nodeV4+":9080", "pod-b")
			gc["cni.dev/valid-attachments"] = []map[string]string{}
			n.mustCall("portmap", "GC", a, gc)
			unreachable(t, n.out, nodeV4+":9080")
			n.mustCall("portmap", "DEL", b, confB)

			if after := n.ruleset(); after != before {
				t.Errorf("ruleset after DEL of everything differs from before ADD:\n--- before\n%s--- after\n%s", before, after)
			}
		})
	}
}

func fromOutside(t *testing.T, n *node) {
	for _, ip := range []string{nodeV4, nodeV6} {
		reaches(t, n.out, "tcp", net.JoinHostPort(ip, "8080"), "pod-a")
		reaches(t, n.out, "udp", net.JoinHostPort(ip, "8081"), "pod-a")
		reaches(t, n.out, "tcp", net.JoinHostPort(ip, "9080"), "pod-b")
	}
}

// hostIPOnly: a mapping with a hostIP answers on that address only, and
// only in its family.
func hostIPOnly(t *testing.T, n *node) {
	reaches(t, n.out, "tcp", nodeV4+":8082", "pod-a")
	unreachable(t, n.out, otherV4+":8082")
	unreachable(t, n.out, "["+nodeV6+"]:8082")
	reaches(t, n.out, "tcp", "["+nodeV6+"]:8083", "pod-a")
	unreachable(t, n.out, "["+otherV6+"]:8083")
	unreachable(t, n.out, nodeV4+":8083")
}

// checkNotices: CHECK fails once the shared entry rule is gone, and a
// repeated ADD puts it back.
func checkNotices(t *testing.T, n *node, a *pod, conf map[string]any) {
	if n.backend == backendIPTables {
		n.ns.Run(t, "iptables", "-t", "nat", "-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT")
	} else {
		n.ns.Run(t, "nft", "flush", "chain", "ip", "cni_hostport", "prerouting")
	}
	if _, err := n.call("portmap", "CHECK", a, conf); err == nil {
		t.Fatal("CHECK passed without the entry rule in PREROUTING")
	}
	n.mustCall("portmap", "ADD", a, conf)
	n.mustCall("portmap", "CHECK", a, conf)
	reaches(t, n.out, "tcp", nodeV4+":8080", "pod-a")
}

// TestParallelPods starts and stops pods side by side, as a busy node does:
// the ADDs race to create the shared chains and the DELs to remove them,
// and still every mapping works and the ruleset ends as it began.
func TestParallelPods(t *testing.T) {
	const pods = 8
	for _, backend := range []string{backendIPTables, backendNFTables} {
		t.Run(backend, func(t *testing.T) {
			n := newNode(t, backend)
			ps := make([]*pod, pods)
			for i := range ps {
				ps[i] = n.addPod(fmt.Sprintf("pod-%d", i))
			}
			before := n.ruleset()
			parallel(t, pods, func(i int) error {
				_, err := n.call("portmap", "ADD", ps[i], n.portmapConf(ps[i], []map[string]any{mapping(10000+i, 80, "tcp", "")}))
				return err
			})
			for i, p := range ps {
				reaches(t, n.out, "tcp", fmt.Sprintf("%s:%d", nodeV4, 10000+i), p.id)
			}
			// Half the DELs come as kubelet sends them, with the mappings and
			// the prevResult; half as a runtime that lost them.
			parallel(t, pods, func(i int) error {
				conf := n.portmapConf(nil, nil)
				if i%2 == 0 {
					conf = n.portmapConf(ps[i], []map[string]any{mapping(10000+i, 80, "tcp", "")})
				}
				_, err := n.call("portmap", "DEL", ps[i], conf)
				return err
			})
			if after := n.ruleset(); after != before {
				t.Errorf("ruleset after the DELs differs from before the ADDs:\n--- before\n%s--- after\n%s", before, after)
			}
		})
	}
}

func parallel(t *testing.T, n int, fn func(i int) error) {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestFailedAddLeavesNothing: an ADD that the kernel refuses (its
// externalSetMarkChain does not exist) takes back what it did in either
// family and leaves the other pod's mapping alone.
func TestFailedAddLeavesNothing(t *testing.T) {
	n := newNode(t, backendIPTables)
	a, b := n.addPod("pod-a"), n.addPod("pod-b")
	n.mustCall("portmap", "ADD", a, n.portmapConf(a, []map[string]any{mapping(8080, 80, "tcp", "")}))
	before := n.ruleset()
	conf := n.portmapConf(b, []map[string]any{mapping(9080, 80, "tcp", "")})
	conf["externalSetMarkChain"] = "NO-SUCH-CHAIN"
	if _, err := n.call("portmap", "ADD", b, conf); err == nil {
		t.Fatal("ADD with a missing externalSetMarkChain succeeded")
	}
	if after := n.ruleset(); after != before {
		t.Errorf("failed ADD left rules behind:\n--- before\n%s--- after\n%s", before, after)
	}
	reaches(t, n.out, "tcp", nodeV4+":8080", "pod-a")
}
