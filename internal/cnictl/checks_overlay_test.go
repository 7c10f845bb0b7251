package cnictl

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// TestDoctorOverlay breaks the etcd and overlay state of a healthy node one
// way at a time (etcd, network config, this node's lease, vxlan devices,
// routes, neighbours, FDB) and expects doctor to name it with its fix.
func TestDoctorOverlay(t *testing.T) {
	peerB := peerSpecs[0]
	tests := []struct {
		name         string
		breakIt      func(t *testing.T, f *nodeFixture)
		check        string
		sev          Severity
		message, fix string
	}{
		{"etcd unreachable", func(t *testing.T, f *nodeFixture) {
			f.etcd.endpoint = "http://" + freeAddr(t)
		}, "etcd", Error, "etcd does not answer at http://127.0.0.1:", "etcdctl --endpoints http://127.0.0.1:"},
		{"etcd CA file unreadable", func(t *testing.T, f *nodeFixture) {
			f.etcd.extra = []string{"--etcd-cafile", "/nonexistent/ca.pem"}
		}, "etcd", Error, "cannot read the etcd TLS files", "--etcd-cafile"},
		{"no network config", func(t *testing.T, f *nodeFixture) {
			f.etcd.setConfig(t, nil)
		}, "network-config", Error, "no network config at /test/TestDoctorOverlay_no_network_config/config",
			`etcdctl --endpoints http://127.0.0.1:` /* then the port */},
		{"no network config: the fix is the config subnet.env implies", func(t *testing.T, f *nodeFixture) {
			f.etcd.setConfig(t, nil)
		}, "network-config", Error, "subnetd waits for it",
			`/config '{"Network":"10.244.0.0/16","SubnetLen":28,"EnableIPv6":true,"IPv6Network":"fd44::/56","IPv6SubnetLen":64,"Backend":{"Type":"vxlan"}}'` + "`, or start subnetd with --net-config"},
		{"malformed network config", func(t *testing.T, f *nodeFixture) {
			f.etcd.setConfig(t, []byte(`{"Network":"10.244.0.0/16"`))
		}, "network-config", Error, "is unusable: subnetd stays unready", "store a corrected one: `ETCDCTL_API=3 etcdctl"},
		{"network config disagrees with subnet.env", func(t *testing.T, f *nodeFixture) {
			f.etcd.setConfig(t, []byte(`{"Network":"10.96.0.0/16","EnableIPv6":true,"IPv6Network":"fd44::/56"}`))
		}, "network-config", Error, "disagrees with", "restart subnetd on every node"},
		{"this node's lease expired", func(t *testing.T, f *nodeFixture) {
			must(t, f.etcd.self.Revoke(context.Background())) // what etcd does at the TTL
		}, "node-lease", Error, "no lease for this node's subnet 10.244.1.0/28,fd44:0:0:1::/64 in etcd: it expired", "restart subnetd on this node"},
		{"this node's subnet leased by another node", func(t *testing.T, f *nodeFixture) {
			other := ownSpec
			other.id, other.ip = "node-z", "192.168.50.26"
			f.etcd.put(t, f.etcd.self, other)
		}, "node-lease", Error, "is leased by another node (SubnetdNodeID node-z, PublicIP 192.168.50.26)", "Never copy subnet.env"},
		{"subnet.env of an earlier lease", func(t *testing.T, f *nodeFixture) {
			must(t, f.etcd.self.Revoke(context.Background()))
			moved := ownSpec
			moved.v4, moved.v6 = "10.244.5.0/28", "fd44:0:0:5::/64"
			f.etcd.put(t, f.etcd.self, moved)
		}, "node-lease", Error, "is stale: this node's lease is 10.244.5.0/28,fd44:0:0:5::/64", "rewrites subnet.env"},
		{"flannel.1 missing", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "ip", "link", "delete", "flannel.1")
		}, "vxlan-device", Error, "flannel.1 does not exist though this node holds lease", "restart subnetd on this node"},
		{"flannel-v6.1 down", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "ip", "link", "set", "flannel-v6.1", "down")
		}, "vxlan-device", Error, "flannel-v6.1 is down", "ip link set flannel-v6.1 up"},
		{"route missing", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "ip", "route", "del", "10.244.2.0/28")
		}, "overlay-peers", Error, "1 overlay entries for other nodes' leases are missing",
			"ip route replace 10.244.2.0/28 nhid "}, // the nexthop of ours for 10.244.2.0 is left
		{"IPv6 FDB entry missing", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "bridge", "fdb", "del", peerB.mac(family.IPv6).String(), "dev", "flannel-v6.1", "dst", "fd50::2", "self")
		}, "overlay-peers", Error, "are missing", fmt.Sprintf("bridge fdb replace %s dev flannel-v6.1 dst fd50::2 self permanent", peerB.mac(family.IPv6))},
		{"neighbour with an old VTEP MAC", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "ip", "neigh", "replace", "10.244.2.0", "lladdr", "02:00:00:00:00:99", "dev", "flannel.1", "nud", "permanent")
		}, "overlay-peers", Error, "are missing", fmt.Sprintf("ip neigh replace 10.244.2.0 lladdr %s dev flannel.1 nud permanent", peerB.mac(family.IPv4))},
		{"entries of a node that left", func(t *testing.T, f *nodeFixture) {
			f.etcd.del(t, peerB.subnets())
		}, "overlay-peers", Warn, "7 overlay entries serve no lease", "ip route del 10.244.2.0/28"},
		{"a lease subnetd cannot program", func(t *testing.T, f *nodeFixture) {
			_, err := f.etcd.peers.Put(context.Background(), subnet.Subnets{V4: netip.MustParsePrefix("10.244.9.0/28"), V6: netip.MustParsePrefix("fd44:0:0:9::/64")},
				[]byte(`{"PublicIP":"192.168.50.9","BackendType":"host-gw"}`), 0, true)
			must(t, err)
		}, "overlay-peers", Warn, "the lease of 10.244.9.0/28,fd44:0:0:9::/64 cannot be programmed", "etcdctl del /test/TestDoctorOverlay_a_lease_subnetd_cannot_program/subnets/10.244.9.0-28&fd44:0:0:9::-64"},
		{"DirectRouting configured, peers still through flannel.1", func(t *testing.T, f *nodeFixture) {
			f.etcd.setConfig(t, []byte(strings.Replace(dualStackConfig, `"Type":"vxlan"`, `"Type":"vxlan","DirectRouting":true`, 1)))
		}, "overlay-peers", Error, "missing", "ip route replace 10.244.2.0/28 via 192.168.50.2 proto 83"},
		{"a stale lease at this node's address", func(t *testing.T, f *nodeFixture) {
			f.etcd.put(t, f.etcd.peers, leaseSpec{"old-install", "10.244.7.0/28", "fd44:0:0:7::/64", "192.168.50.1", "fd50::1", true})
		}, "overlay-peers", Warn, "the lease of 10.244.7.0/28,fd44:0:0:7::/64 cannot be programmed", "/subnets/10.244.7.0-28&fd44:0:0:7::-64`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := healthyNode(t)
			tt.breakIt(t, f)
			code, fds, report := f.doctor(t)
			if !slices.ContainsFunc(fds, func(fd Finding) bool {
				return fd.Check == tt.check && fd.Severity == tt.sev && strings.Contains(fd.Message, tt.message) && strings.Contains(fd.Fix, tt.fix)
			}) || code != int(worst(fds)) {
				t.Fatalf("exit %d; want a %s finding of %s with %q and fix %q:\n%s", code, tt.sev, tt.check, tt.message, tt.fix, report)
			}
		})
	}
}

// TestDoctorEtcdDownIsOneFinding: with etcd gone the checks that need it
// report nothing, so that the one cause reads as one finding, and doctor
// gives up within its deadline.
func TestDoctorEtcdDownIsOneFinding(t *testing.T) {
	f := healthyNode(t)
	f.etcd.endpoint = "http://" + freeAddr(t)
	start := time.Now()
	code, fds, report := f.doctor(t) // two runs: --json and the report
	if took := time.Since(start); took > 4*2*time.Second {
		t.Errorf("doctor took %v with --etcd-timeout 2s", took)
	}
	var bad []string
	for _, fd := range fds {
		if fd.Severity != OK {
			bad = append(bad, fd.Check)
		}
		if slices.Contains([]string{"network-config", "node-lease", "vxlan-device", "overlay-peers"}, fd.Check) {
			t.Errorf("%s reported with etcd down: %+v", fd.Check, fd)
		}
	}
	if code != 2 || !slices.Equal(bad, []string{"etcd"}) {
		t.Fatalf("exit %d, failing checks %v:\n%s", code, bad, report)
	}
	if !strings.Contains(report, "endpoint health") || !strings.Contains(report, f.etcd.endpoint) {
		t.Fatalf("the fix must name the endpoint and how to check it:\n%s", report)
	}
}

// TestDoctorNoFlannelNoEtcd: a node without flannel needs no etcd.
func TestDoctorNoFlannelNoEtcd(t *testing.T) {
	f := healthyNode(t)
	must(t, os.WriteFile(f.conf+"/10-flannel.conflist", []byte(`{"cniVersion":"1.0.0","name":"br","plugins":[{"type":"bridge","ipam":{"type":"host-local"}}]}`), 0o644))
	f.etcd.endpoint = "http://" + freeAddr(t)
	_, fds, report := f.doctor(t)
	for _, fd := range fds {
		if fd.Check == "etcd" {
			t.Fatalf("etcd checked on a node without flannel:\n%s", report)
		}
	}
}

// TestDoctorHostGW: on a host-gw network the routes via the peers' public
// IPs, on the interface of this node's public IP, are compared with the
// leases as well.
func TestDoctorHostGW(t *testing.T) {
	f := healthyNode(t)
	f.etcd.setConfig(t, []byte(strings.Replace(dualStackConfig, `"Type":"vxlan"`, `"Type":"host-gw"`, 1)))
	hostGW := func(s leaseSpec) []byte { return bytes.Replace(s.value(t), []byte(`"vxlan"`), []byte(`"host-gw"`), 1) }
	f.etcd.putValue(t, f.etcd.self, ownSpec, hostGW(ownSpec))
	var peers [2][]overlay.Peer
	for _, p := range peerSpecs {
		f.etcd.putValue(t, f.etcd.peers, p, hostGW(p))
		for _, fam := range family.All() {
			peers[fam] = append(peers[fam], p.peer(fam))
		}
	}
	f.ns.Do(t, func() error {
		for _, fam := range family.All() {
			own := ownSpec.subnets()
			if _, err := (overlay.HostGW{Underlay: "ul0", Subnet: *own.Of(fam), Log: quiet}).Reconcile(peers[fam]); err != nil {
				return err
			}
		}
		return nil
	})
	code, fds, report := f.doctor(t)
	if code != 0 || !slices.ContainsFunc(fds, func(fd Finding) bool {
		return fd.Check == "overlay-peers" && strings.HasPrefix(fd.Message, "host-gw via ul0: routes")
	}) {
		t.Fatalf("host-gw node as subnetd leaves it: exit %d\n%s", code, report)
	}
	f.ns.Run(t, "ip", "route", "del", "fd44:0:0:3::/64")
	_, fds, report = f.doctor(t)
	if !slices.ContainsFunc(fds, func(fd Finding) bool {
		return fd.Check == "overlay-peers" && fd.Severity == Error && strings.Contains(fd.Fix, "ip route replace fd44:0:0:3::/64 via fd50::3 proto 83")
	}) {
		t.Fatalf("host-gw route deleted:\n%s", report)
	}
}

func TestDoctorEtcdFlags(t *testing.T) {
	for _, args := range [][]string{{"--etcd-certfile", "/c.pem"}, {"--etcd-timeout", "-1s"}, {"--etcd-endpoints", ""}} {
		if code, _, stderr := run(append([]string{"doctor"}, args...)...); code != 2 || !strings.Contains(stderr, "--etcd-") {
			t.Errorf("doctor %q: exit %d, %q; want a usage error naming the flag", args, code, stderr)
		}
	}
}

// TestExampleConfig: the config doctor tells operators to store parses, and
// leases subnets of the length this node's subnet.env already has.
func TestExampleConfig(t *testing.T) {
	for _, tt := range []struct {
		env          string
		v4len, v6len int
	}{
		{"", 24, 0},
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n", 24, 0},
		{subnetEnv, 28, 64},
		{"FLANNEL_NETWORK=10.96.0.0/12\nFLANNEL_SUBNET=10.96.4.1/22\nFLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:7::1/64\n", 22, 64},
	} {
		n := &node{}
		if tt.env != "" {
			p := filepath.Join(t.TempDir(), "subnet.env")
			must(t, os.WriteFile(p, []byte(tt.env), 0o644))
			env, err := envfile.Read(p)
			must(t, err)
			n.env = &env
		}
		c, err := subnet.ParseConfig([]byte(n.exampleConfig()))
		if err != nil || c.SubnetLen != tt.v4len || (tt.v6len > 0) != c.EnableIPv6 || c.IPv6SubnetLen != tt.v6len {
			t.Errorf("%q: %s parses to %+v, %v", tt.env, n.exampleConfig(), c, err)
		}
	}
}
