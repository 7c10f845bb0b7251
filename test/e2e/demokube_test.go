package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kubetest "github.com/cnisuite/cni/test/kube"
)

// demoKubeEnv turns TestDemoKube on: `make demo-kube` (scripts/demo-kube.sh)
// sets it; make test leaves it unset, TestDaemonSet checking the same path.
const demoKubeEnv = "CNISUITE_DEMO_KUBE"

// TestDemoKube is `make demo-kube`: a Kubernetes cluster in a box for a
// newcomer, the way kube-flannel users run flannel, printed as it goes. The
// control plane (etcd, kube-apiserver, kube-controller-manager allocating
// pod CIDRs, kube-scheduler) in an underlay namespace; three nodes, each a
// namespace with containerd and kubelet; the image `make image` builds,
// imported on every node; conf/kube-flannel.yml applied with kubectl, whose
// DaemonSet installs the plugins and the conflist and runs subnetd; an echo
// pod on every node; every pod reaching every other, and a hostPort from
// outside; then everything removed.
func TestDemoKube(t *testing.T) {
	if os.Getenv(demoKubeEnv) == "" {
		t.Skip("make demo-kube runs it (" + demoKubeEnv + "=1); make test checks the same path in TestDaemonSet")
	}
	start := time.Now()
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	step := func(what string) { say("\n== %s (%.1f s)", what, time.Since(start).Seconds()) }

	step("building the DaemonSet's image with make image")
	img, err := buildDSImage()
	if err != nil {
		t.Fatal(err)
	}
	say("%s (%s)", img.Name, filepath.Base(img.Archive))
	netConf, err := os.ReadFile(filepath.Join(confDir, "net-conf.json"))
	if err != nil {
		t.Fatal(err)
	}
	step("starting the control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
	o := newUnderlay(t, string(netConf))
	d := &dsTest{o: o, image: img, c: kubetest.Start(t, kubetest.Options{NS: o.ul, Address: sdUnderlay,
		ClusterCIDRs: []string{"10.244.0.0/16", "fd00:10:244::/56"}, Kubelets: true})}
	say("API server %s, in namespace %s; pod CIDRs from 10.244.0.0/16 and fd00:10:244::/56", d.c.URL, o.ul.Name)
	k := d.sub(t)
	t.Cleanup(func() { d.remove(t, "kube-flannel-ds", 1, 3) })

	step("starting three nodes: containerd and kubelet in a namespace each, the image imported")
	nodes := d.addNodes(k, 1, 3)
	say("%s", d.c.Kubectl(t, "", "get", "nodes", "-o", "wide"))

	step("kubectl apply -f conf/kube-flannel.yml (image: " + img.Name + ")")
	d.apply(t, "kube-flannel.yml", nil)
	d.daemonSetReady(t, "kube-flannel-ds", nodes)
	say("%s", d.c.Kubectl(t, "", "--namespace", dsNamespace, "get", "pods", "-o", "wide"))
	say("%s", d.c.Kubectl(t, "", "get", "nodes", "-o", "custom-columns=NODE:.metadata.name,READY:.status.conditions[?(@.type==\"Ready\")].status,POD-CIDRS:.spec.podCIDRs,PUBLIC-IP:.metadata.annotations.flannel\\.alpha\\.coreos\\.com/public-ip"))
	say("node1's subnet.env:\n%s", readFile(t, nodes[0].node.Path("/run/flannel/subnet.env")))

	step("an echo pod on every node, its port 8080 also the node's hostPort")
	pods := d.runEchoPods(t, nodes)
	say("%s", d.c.Kubectl(t, "", "get", "pods", "-o", "wide"))

	step("every pod pings every other pod's addresses, and opens a TCP connection to its echo server")
	answered, asked := demoMatrix(pods)
	step("from outside the cluster (the underlay): node:8080 -> the pod on that node, through portmap")
	hostPorts := 0
	for _, p := range pods {
		addr := net.JoinHostPort(p.on.ip, fmt.Sprint(echoPort))
		ok := echoFrom(o.ul.Path, addr) == nil
		say("  %-22s -> %-12s %s", addr, p.api.Name, map[bool]string{true: "answered", false: "NO ANSWER"}[ok])
		if ok {
			hostPorts++
		}
	}

	step("deleting the pods: nothing of them may stay on their nodes")
	d.deletePods(t, pods)
	if answered != asked || hostPorts != len(pods) {
		t.Errorf("%d/%d answered across the pods, %d/%d hostPorts", answered, asked, hostPorts, len(pods))
	}
	say("\n%s", strings.Repeat("=", 30)+" Kubernetes cluster in a box "+strings.Repeat("=", 30))
	say("  control plane  etcd, kube-apiserver, kube-controller-manager, kube-scheduler (v1.37.2)")
	say("  nodes          3, each with containerd and kubelet, Ready once the DaemonSet installed its network")
	say("  DaemonSet      conf/kube-flannel.yml with %s: plugins and conflist installed, subnetd in kube mode", img.Name)
	say("  pods           %d echo pods, one per node, dual-stack", len(pods))
	say("  traffic        %d/%d pings and TCP echoes answered between the pods, across nodes, IPv4 and IPv6", answered, asked)
	say("  hostPort       %d/%d nodes' :8080 answered from outside", hostPorts, len(pods))
	say("  teardown       pods deleted, nothing of them left; the cluster goes when this test ends")
	say("  duration       %.1f s before teardown", time.Since(start).Seconds())
	say("%s", strings.Repeat("=", 89))
}

// demoMatrix prints, for every pod, which of the others' addresses answer
// a ping and a TCP echo, and returns the count answered and asked.
func demoMatrix(pods []*kubePod) (answered, asked int) {
	for _, from := range pods {
		var cells []string
		for _, to := range pods {
			if from == to {
				continue
			}
			for _, ip := range to.api.Status.PodIPs {
				ping := exec.Command("nsenter", "--net="+from.box.NetNS(), "ping", "-c", "1", "-W", "2", ip.IP).Run() == nil
				echo := echoFrom(from.box.NetNS(), net.JoinHostPort(ip.IP, fmt.Sprint(echoPort))) == nil
				asked += 2
				answered += btoi(ping) + btoi(echo)
				cells = append(cells, fmt.Sprintf("%s ping %s tcp %s", ip.IP, mark(ping), mark(echo)))
			}
		}
		fmt.Printf("  %-11s -> %s\n", from.api.Name, strings.Join(cells, " | "))
	}
	return answered, asked
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func mark(ok bool) string { return map[bool]string{true: "ok", false: "NO"}[ok] }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
