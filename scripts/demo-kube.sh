#!/bin/sh
# make demo-kube: a Kubernetes cluster in a box (test/e2e's TestDemoKube):
# the control plane, three nodes with containerd and kubelet, the DaemonSet
# of conf/kube-flannel.yml with the image make image builds, echo pods, the
# traffic between them and a hostPort, then everything removed. Everything
# lives in namespaces, private mount namespaces, cgroups and temporary
# directories the test creates and always deletes; this script then checks
# that none of them is left.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
	echo "demo-kube: run as root: it creates network namespaces" >&2
	exit 1
fi
work=$(mktemp -d /tmp/cni-demo-kube.XXXXXX)
trap 'rm -rf "$work"' EXIT

# What the machine has before, to tell what the demo left from what others run.
snapshot() {
	ip netns list | awk '{print "netns " $1}'
	ls -d /sys/fs/cgroup/*/cnisuite-* 2>/dev/null | sed 's/^/cgroup /'
	awk '{print "mount " $5}' /proc/self/mountinfo
	pgrep -f '(^|/)(kubelet|containerd|containerd-shim-runc-v2|kube-apiserver|kube-controller-manager|kube-scheduler|etcd|subnetd|subnetd-kube)( |$)' | sed 's/^/pid /'
	ls -d /tmp/cni-e2e-* /tmp/TestDemoKube* 2>/dev/null | sed 's/^/dir /'
}
snapshot | sort >"$work/before"

echo "demo-kube: building the end-to-end tests"
(cd "$ROOT" && go test -c -o "$work/e2e.test" ./test/e2e)
start=$(date +%s)
status=0
(cd "$ROOT/test/e2e" && CNISUITE_DEMO_KUBE=1 "$work/e2e.test" -test.run '^TestDemoKube$' -test.timeout 20m) || status=$?

snapshot | sort >"$work/after"
left=$(comm -13 "$work/before" "$work/after")
echo
if [ -n "$left" ]; then
	echo "demo-kube: LEFT BEHIND:"
	echo "$left"
	exit 1
fi
echo "demo-kube: no namespace, process, mount, cgroup or temporary directory left; $(($(date +%s) - start)) s with teardown"
exit $status
