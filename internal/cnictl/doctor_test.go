package cnictl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/link"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// nodeFixture is a healthy node: files in temp dirs, subnetd's health
// endpoint on a test server, and links in a namespace of its own.
type nodeFixture struct {
	conf, bin, subnet, data, sysctl string
	ready                           *httptest.Server
	readyStatus                     int
	ns                              *netnstest.NS
	etcd                            *clusterFixture // config and leases; overlay in ns
	kube                            *kubeNodes      // or the Nodes, with --kube-subnet-mgr
}

const flannelConflist = `{"cniVersion":"1.0.0","name":"cbr0","plugins":[
 {"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`

const subnetEnv = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/28\nFLANNEL_IPV6_NETWORK=fd44::/56\nFLANNEL_IPV6_SUBNET=fd44:0:0:1::1/64\n" +
	"FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"

func healthyNode(t *testing.T) *nodeFixture {
	t.Helper()
	f := baseNode(t)
	f.etcd = newCluster(t)
	return f
}

// baseNode is a healthy node without its lease store: files, links and
// this node's overlay for ownSpec with peerSpecs as peers.
func baseNode(t *testing.T) *nodeFixture {
	t.Helper()
	dir := t.TempDir()
	f := &nodeFixture{conf: filepath.Join(dir, "net.d"), bin: filepath.Join(dir, "bin"), subnet: filepath.Join(dir, "run", "subnet.env"),
		data: filepath.Join(dir, "networks"), sysctl: filepath.Join(dir, "sys"), readyStatus: http.StatusOK}
	for _, d := range []string{f.conf, f.bin, filepath.Dir(f.subnet), f.data, filepath.Join(f.sysctl, "net", "bridge"), filepath.Join(f.sysctl, "kernel")} {
		must(t, os.MkdirAll(d, 0o755))
	}
	release, err := os.ReadFile("/proc/sys/kernel/osrelease")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(f.sysctl, "kernel", "osrelease"), release, 0o644))
	must(t, os.WriteFile(filepath.Join(f.conf, "10-flannel.conflist"), []byte(flannelConflist), 0o644))
	for _, p := range []string{"flannel", "bridge", "host-local", "portmap"} {
		must(t, os.WriteFile(filepath.Join(f.bin, p), []byte("#!/bin/true\n"), 0o755))
	}
	must(t, os.WriteFile(f.subnet, []byte(subnetEnv), 0o644))
	f.ready = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(f.readyStatus)
		fmt.Fprintln(w, map[bool]string{true: "ready", false: "no lease yet: waiting for etcd"}[f.readyStatus == 200])
	}))
	t.Cleanup(f.ready.Close)
	f.ns = netnstest.New(t, "doctor")
	f.reserve(t, "10.244.1.2", 1, false)
	f.ns.Run(t, "ip", "link", "add", "cni0", "mtu", "1450", "type", "bridge")
	f.ns.Run(t, "ip", "addr", "add", "10.244.1.1/28", "dev", "cni0")
	f.ns.Run(t, "ip", "addr", "add", "fd44:0:0:1::1/64", "dev", "cni0", "nodad")
	f.ns.Run(t, "ip", "link", "add", "vethpod", "mtu", "1450", "master", "cni0", "type", "veth", "peer", "name", "eth0")
	f.ns.Run(t, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "nolearning")
	overlayNode(t, f.ns)
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// reserve records count addresses from first of cbr0 for pods added from
// the node's namespace; gone ones' namespaces are then freed, so stale
// proves their owners gone.
func (f *nodeFixture) reserve(t *testing.T, first string, count int, gone bool) {
	t.Helper()
	s, err := disk.Open(f.data, "cbr0")
	must(t, err)
	defer s.Close()
	a := netip.MustParseAddr(first)
	for i := range count {
		c := ipam.Claim{Owner: ipam.Owner{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"}, Netns: podNetns(t, f.ns, gone)}
		if ok, err := s.Reserve(a, c, 0); !ok || err != nil {
			t.Fatal(ok, err)
		}
		a = a.Next()
	}
}

func setTxChecksum(t *testing.T, ns *netnstest.NS, on bool) {
	t.Helper()
	ns.Do(t, func() error {
		return link.SetTxChecksum("flannel.1", on)
	})
}

func (f *nodeFixture) doctor(t *testing.T) (int, []Finding, string) {
	t.Helper()
	args := []string{"doctor", "--cni-conf-dir", f.conf, "--cni-bin-dir", f.bin, "--subnet-file", f.subnet,
		"--data-dir", f.data, "--healthz", f.ready.URL, "--sysctl-dir", f.sysctl, "--netns", f.ns.Path}
	code, out, stderr := f.run(append(args, "--json")...)
	var fds []Finding
	if err := json.Unmarshal([]byte(out), &fds); err != nil {
		t.Fatalf("exit %d, stdout %q, stderr %q: %v", code, out, stderr, err)
	}
	_, report, _ := f.run(args...)
	return code, fds, report
}

// run runs cnictl with the flags of the node's lease store.
func (f *nodeFixture) run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, now: time.Now}
	if f.etcd != nil {
		args = append(args, f.etcd.args()...)
	}
	if f.kube != nil {
		args = append(args, f.kube.args()...)
		e.kubeDial = f.kube.api.dial
	}
	code = mainIn(e, args)
	return code, out.String(), errb.String()
}

// allOK fails unless every check of the store reported, and only ok.
func allOK(t *testing.T, fds []Finding, s store) {
	t.Helper()
	seen := map[string]bool{}
	for _, fd := range fds {
		seen[fd.Check] = true
		if fd.Severity != OK {
			t.Errorf("healthy node: %+v", fd)
		}
	}
	for _, c := range checks() {
		if !seen[c.name] && (c.store == anyStore || c.store == s) {
			t.Errorf("check %s reported nothing on a healthy node", c.name)
		}
	}
}

func (s *Severity) UnmarshalJSON(b []byte) error {
	for i, w := range []string{`"ok"`, `"warn"`, `"error"`} {
		if string(b) == w {
			*s = Severity(i)
			return nil
		}
	}
	return fmt.Errorf("severity %s", b)
}

func TestDoctorHealthy(t *testing.T) {
	f := healthyNode(t)
	code, fds, report := f.doctor(t)
	allOK(t, fds, etcdStore)
	if code != 0 || !strings.Contains(report, "0 warnings, 0 errors") {
		t.Fatalf("exit %d:\n%s", code, report)
	}
}

func TestDoctorBroken(t *testing.T) {
	tests := []struct {
		name         string
		breakIt      func(t *testing.T, f *nodeFixture)
		check        string
		sev          Severity
		message, fix string
	}{
		{"no conflist", func(t *testing.T, f *nodeFixture) {
			must(t, os.Remove(filepath.Join(f.conf, "10-flannel.conflist")))
		}, "cni-config", Error, `no networks found in`, "install the suite's configuration"},
		{"garbage conflist", func(t *testing.T, f *nodeFixture) {
			must(t, os.WriteFile(filepath.Join(f.conf, "05-bad.conf"), []byte("{"), 0o644))
		}, "cni-config", Error, "05-bad.conf is not a valid network configuration", "fix or remove"},
		{"delegate missing", func(t *testing.T, f *nodeFixture) {
			must(t, os.Remove(filepath.Join(f.bin, "bridge")))
		}, "cni-plugins", Error, `needs plugin "bridge"`, "install the suite's bridge binary as "},
		{"plugin not executable", func(t *testing.T, f *nodeFixture) {
			must(t, os.Chmod(filepath.Join(f.bin, "portmap"), 0o644))
		}, "cni-plugins", Error, "portmap is not executable", "chmod 0755"},
		{"subnet.env missing", func(t *testing.T, f *nodeFixture) {
			must(t, os.Remove(f.subnet))
		}, "subnet-env", Error, "subnetd on THIS node has not written its lease", "Never copy subnet.env from another node"},
		{"subnet.env malformed", func(t *testing.T, f *nodeFixture) {
			must(t, os.WriteFile(f.subnet, []byte("FLANNEL_SUBNET=10.244.1.300/24\n"), 0o644))
		}, "subnet-env", Error, "is malformed", "restart subnetd on this node"},
		{"subnetd not ready", func(t *testing.T, f *nodeFixture) {
			f.readyStatus = http.StatusServiceUnavailable
		}, "subnetd-ready", Error, "not ready: no lease yet: waiting for etcd", "subnetd's log"},
		{"subnetd down", func(t *testing.T, f *nodeFixture) {
			f.ready.Close()
		}, "subnetd-ready", Error, "does not answer", "start subnetd"},
		{"store full of gone owners", func(t *testing.T, f *nodeFixture) {
			f.reserve(t, "10.244.1.3", 12, true) // with the live .2: all 13
		}, "ipam-store", Error, "no IP addresses available in network: cbr0", "cnictl ipam gc cbr0"},
		{"store nearly full", func(t *testing.T, f *nodeFixture) {
			f.reserve(t, "10.244.1.3", 11, true)
		}, "ipam-store", Warn, "nearly out of addresses", "cnictl ipam gc cbr0"},
		{"a leaked address", func(t *testing.T, f *nodeFixture) {
			f.reserve(t, "10.244.1.7", 1, true)
		}, "ipam-store", Warn, "holds 1 addresses of containers that are gone (their DEL never came): 10.244.1.7", "cnictl ipam gc cbr0"},
		{"store full of live owners", func(t *testing.T, f *nodeFixture) {
			f.reserve(t, "10.244.1.3", 12, false)
		}, "ipam-store", Error, "every owner is alive or unproven", "larger subnet"},
		{"cni0 of an old lease", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "ip", "addr", "add", "10.244.7.1/24", "dev", "cni0")
		}, "bridge-address", Error, "cni0 holds 10.244.7.1/24, outside this node's subnet", "ip link delete cni0"},
		{"cni0 of an old IPv6 lease", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "ip", "addr", "add", "fd44:0:0:9::1/64", "dev", "cni0", "nodad")
		}, "bridge-address", Error, "cni0 holds fd44:0:0:9::1/64, outside this node's subnet fd44:0:0:1::1/64", "recreates it with fd44:0:0:1::1/64"},
		{"store of another network is not measured against flannel's subnet", func(t *testing.T, f *nodeFixture) {
			f.reserve(t, "10.244.1.3", 12, true) // cbr0 full, as in the case above
			must(t, os.Rename(filepath.Join(f.data, "cbr0"), filepath.Join(f.data, "zz-other")))
		}, "ipam-store", Warn, "network zz-other holds 12 addresses of containers that are gone", "cnictl ipam gc zz-other"}, // leaks, not "out of addresses"
		{"FORWARD DROP", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "iptables", "-P", "FORWARD", "DROP")
		}, "forward-policy", Error, "nothing accepts the pod network 10.244.0.0/16", "iptables -A FORWARD -s 10.244.0.0/16 -j ACCEPT"},
		{"FORWARD DROP, subnetd's chain not jumped to", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "iptables", "-N", "FLANNEL-FWD")
			f.ns.Run(t, "iptables", "-A", "FLANNEL-FWD", "-s", "10.244.0.0/16", "-j", "ACCEPT")
			f.ns.Run(t, "iptables", "-A", "FLANNEL-FWD", "-d", "10.244.0.0/16", "-j", "ACCEPT")
			f.ns.Run(t, "iptables", "-P", "FORWARD", "DROP")
		}, "forward-policy", Error, "nothing accepts the pod network", "FLANNEL-FWD"},
		{"an nftables forward chain dropping by policy", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "nft", "add table inet fw")
			f.ns.Run(t, "nft", "add chain inet fw forward { type filter hook forward priority 0 ; policy drop ; }")
			f.ns.Run(t, "nft", "add rule inet fw forward ip saddr 10.244.0.0/16 accept")
		}, "forward-policy", Error, "nftables chains drop forwarded packets by policy and do not accept the pod network 10.244.0.0/16", "nft add rule inet fw forward ip daddr 10.244.0.0/16 accept"},
		{"br_netfilter missing", func(t *testing.T, f *nodeFixture) {
			must(t, os.RemoveAll(filepath.Join(f.sysctl, "net", "bridge")))
		}, "br-netfilter", Warn, "br_netfilter is not loaded", "modprobe br_netfilter"},
		{"pod MTU above the overlay's", func(t *testing.T, f *nodeFixture) {
			f.ns.Run(t, "ip", "link", "set", "vethpod", "mtu", "1500")
		}, "pod-mtu", Error, "larger than the overlay's 1450", "ip link set cni0 mtu 1450"},
		{"vxlan checksum offload on, kernel before 5.7", func(t *testing.T, f *nodeFixture) {
			must(t, os.WriteFile(filepath.Join(f.sysctl, "kernel", "osrelease"), []byte("5.4.0-150-generic\n"), 0o644))
		}, "vxlan-checksum", Warn, "kernel 5.4.0-150-generic (before 5.7) corrupts vxlan checksums after NAT", "ethtool -K flannel.1 tx off"},
		{"vxlan checksum offload off, kernel before 5.7", func(t *testing.T, f *nodeFixture) {
			must(t, os.WriteFile(filepath.Join(f.sysctl, "kernel", "osrelease"), []byte("5.4.0-150-generic\n"), 0o644))
			setTxChecksum(t, f.ns, false)
		}, "vxlan-checksum", OK, "tx checksum offload is off for flannel.1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := healthyNode(t)
			tt.breakIt(t, f)
			code, fds, report := f.doctor(t)
			var found bool
			for _, fd := range fds {
				if fd.Check == tt.check && fd.Severity == tt.sev && strings.Contains(fd.Message, tt.message) && strings.Contains(fd.Fix, tt.fix) {
					found = true
				}
			}
			if !found || code != int(worst(fds)) || code < int(tt.sev) {
				t.Fatalf("exit %d; want a %s finding of %s with %q and fix %q:\n%s", code, tt.sev, tt.check, tt.message, tt.fix, report)
			}
		})
	}
}

func TestAccepts(t *testing.T) {
	const net = "10.244.0.0/16"
	tests := []struct {
		name, rules string
		want        bool
	}{
		{"in FORWARD", "-A FORWARD -s 10.244.0.0/16 -j ACCEPT\n", true},
		{"via subnetd's chain", "-A FORWARD -m comment --comment x -j FLANNEL-FWD\n-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment y -j ACCEPT\n", true},
		{"chain not jumped to", "-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT\n", false},
		{"match and ACCEPT on different rules", "-A FORWARD -s 10.244.0.0/16 -j DROP\n-A FORWARD -i eth9 -j ACCEPT\n", false},
		{"a longer prefix is another network", "-A FORWARD -s 10.244.0.0/160 -j ACCEPT\n", false},
		{"loop of chains", "-A FORWARD -j A\n-A A -j B\n-A B -j A\n", false},
		{"other direction only", "-A FORWARD -d 10.244.0.0/16 -j ACCEPT\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := accepts("*filter\n:FORWARD DROP [0:0]\n"+tt.rules+"COMMIT\n", "-s "+net); got != tt.want {
				t.Fatalf("accepts = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDoctorForwardAccepted: DROP is fine once subnetd's chain accepts the
// pod network both ways.
func TestDoctorForwardAccepted(t *testing.T) {
	f := healthyNode(t)
	f.ns.Run(t, "iptables", "-N", "FLANNEL-FWD")
	f.ns.Run(t, "iptables", "-A", "FORWARD", "-j", "FLANNEL-FWD")
	f.ns.Run(t, "iptables", "-A", "FLANNEL-FWD", "-s", "10.244.0.0/16", "-j", "ACCEPT")
	f.ns.Run(t, "iptables", "-A", "FLANNEL-FWD", "-d", "10.244.0.0/16", "-j", "ACCEPT")
	f.ns.Run(t, "iptables", "-P", "FORWARD", "DROP")
	code, _, report := f.doctor(t)
	if code != 0 || !strings.Contains(report, "[OK] forward-policy: FORWARD's policy is DROP and the pod network 10.244.0.0/16 is accepted") {
		t.Fatalf("exit %d:\n%s", code, report)
	}
}
