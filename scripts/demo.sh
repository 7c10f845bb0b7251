#!/bin/sh
# make demo: one node, two pods, the suite's bridge + host-local + loopback
# driven by cnitool the way an operator tests a conflist. Everything happens
# inside network namespaces this script creates and always deletes, also when
# a step fails. Usage: scripts/demo.sh BIN_DIR
set -eu

BIN=$(cd "${1:?usage: demo.sh BIN_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The release of the libcni in go.mod, so that the demo and the tests use one client.
CNITOOL_VERSION=v1.3.0

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root: it creates network namespaces" >&2
	exit 1
fi

TAG=cnidemo-$$
NODE=$TAG-node
POD_A=$TAG-a
POD_B=$TAG-b
WORK=$(mktemp -d /tmp/cni-demo.XXXXXX)
VARLIB=$WORK/var-lib # seen by cnitool and the plugins as /var/lib
NETCONF=$WORK/net.d  # NETCONFPATH: where cnitool looks for conflists
TOOL=$WORK/tool/cnitool
mkdir -p "$VARLIB" "$NETCONF"

cleanup() {
	for ns in "$POD_A" "$POD_B" "$NODE"; do
		ip netns delete "$ns" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap 'rc=$?; cleanup; [ $rc -eq 0 ] || echo "demo: cleaned up after the failure: namespaces $TAG-* and $WORK deleted" >&2' EXIT
trap 'exit 130' INT TERM HUP

step=0
step() {
	step=$((step + 1))
	printf '\n== %d. %s\n' "$step" "$*"
}

note() { printf '   %s\n' "$*"; }

# run prints a command, runs it and prints its output indented; a failing
# command ends the demo (the EXIT trap cleans up).
run() {
	printf '   $ %s\n' "$*"
	if ! out=$("$@" 2>&1); then
		printf '%s\n' "$out" | sed 's/^/     /'
		printf '\ndemo FAILED at step %d: %s\n' "$step" "$*" >&2
		exit 1
	fi
	[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/     /'
}

# cnitool runs cnitool inside the node, in a private mount namespace where
# /var/lib is $VARLIB: its cache (/var/lib/cni/results) and host-local's
# default dataDir (/var/lib/cni/networks) stay in the demo's directory.
cnitool() {
	unshare --mount --propagation private -- sh -c 'mount --bind "$0" /var/lib && exec "$@"' "$VARLIB" \
		ip netns exec "$NODE" env CNI_PATH="$BIN" NETCONFPATH="$NETCONF" "$TOOL" "$@"
}

# ping_summary sends three pings within at most 5 s (the deadline lets ping
# retry while an IPv6 address is still tentative) and prints the summary.
ping_summary() {
	printf '   $ ip netns exec %s ping -c 3 -i 0.2 -w 5 %s\n' "$1" "$2"
	if ! out=$(ip netns exec "$1" ping -c 3 -i 0.2 -w 5 "$2" 2>&1); then
		printf '%s\n' "$out" | sed 's/^/     /'
		printf '\ndemo FAILED at step %d: ping %s from %s\n' "$step" "$2" "$1" >&2
		exit 1
	fi
	printf '%s\n' "$out" | tail -n 2 | sed 's/^/     /'
}

pod_addr() { ip netns exec "$1" ip -o "-$2" addr show dev eth0 scope global | awk '{ sub("/.*", "", $4); print $4 }'; }
pod_gw() { ip netns exec "$1" ip "-$2" route show default | awk '{ print $3; exit }'; }
root_links() { ip -o link show | awk -F': ' '{ print $2 }' | sort; }
reservations() { ls "$VARLIB/cni/networks/cbr0" 2>/dev/null | grep -v -e '^lock$' -e '^last_reserved_ip' || true; }
machine_files() { ls -d /var/lib/cni /etc/cni/net.d 2>/dev/null || true; }

LINKS_BEFORE=$(root_links)
FILES_BEFORE=$(machine_files)

step "Build cnitool $CNITOOL_VERSION (the CNI project's command-line client) from the Go module proxy"
run env GOBIN="$WORK/tool" go install "github.com/containernetworking/cni/cnitool@$CNITOOL_VERSION"

step "Create a node namespace and two pod namespaces"
note "The node plays the host: the bridge, the host ends of the veths and the iptables rules live there."
run ip netns add "$NODE"
run ip netns add "$POD_A"
run ip netns add "$POD_B"
run ip netns exec "$NODE" ip link set lo up

step "Put the network configuration where cnitool looks (NETCONFPATH)"
run cp "$ROOT/conf/10-cbr0.conflist" "$ROOT/conf/99-loopback.conflist" "$NETCONF/"
run cat "$NETCONF/10-cbr0.conflist"
note "Below, 'cnitool' stands for: ip netns exec $NODE cnitool, with CNI_PATH=$BIN"
note "and NETCONFPATH=$NETCONF, in a private mount namespace where /var/lib is $VARLIB."

step "ADD pod A to network cbr0: the bridge plugin creates cni0 and a veth, host-local picks the addresses"
note "cnitool prints the CNI result, what kubelet/containerd would receive:"
run cnitool add cbr0 "/run/netns/$POD_A"
note "and the loopback network brings up lo:"
run cnitool add lo "/run/netns/$POD_A"
run ip netns exec "$POD_A" ip -br addr
run ip netns exec "$POD_A" ip route
run ip netns exec "$POD_A" ip -6 route show default

step "ADD pod B the same way"
run cnitool add cbr0 "/run/netns/$POD_B"
run cnitool add lo "/run/netns/$POD_B"
run ip netns exec "$POD_B" ip -br addr

A4=$(pod_addr "$POD_A" 4)
A6=$(pod_addr "$POD_A" 6)
B4=$(pod_addr "$POD_B" 4)
B6=$(pod_addr "$POD_B" 6)
GW4=$(pod_gw "$POD_A" 4)
GW6=$(pod_gw "$POD_A" 6)
note "pod A: $A4 $A6    pod B: $B4 $B6    gateway: $GW4 $GW6"

step "What the node looks like now"
run ip netns exec "$NODE" ip -br link
run ip netns exec "$NODE" ip -br addr show cni0
run ip netns exec "$NODE" bridge link show
run ip netns exec "$NODE" iptables -t nat -S
note "host-local's reservations (/var/lib/cni/networks/cbr0 in cnitool's view), one file per address:"
run ls "$VARLIB/cni/networks/cbr0"
note "$A4 is owned by: $(tr '\r\n' '  ' <"$VARLIB/cni/networks/cbr0/$A4") (containerID and ifname, as the reference writes them)"

step "Ping: pod to pod and pod to gateway, IPv4 and IPv6"
ping_summary "$POD_A" "$B4"
ping_summary "$POD_A" "$B6"
ping_summary "$POD_B" "$A4"
ping_summary "$POD_A" "$GW4"
ping_summary "$POD_A" "$GW6"

step "CHECK both attachments and the network's STATUS (silence means OK)"
run cnitool check cbr0 "/run/netns/$POD_A"
run cnitool check cbr0 "/run/netns/$POD_B"
run cnitool status cbr0 "/run/netns/$POD_A"
note "CHECK ok for both pods; STATUS ok"

step "DEL pod A, twice: DEL is idempotent"
run cnitool del cbr0 "/run/netns/$POD_A"
run cnitool del cbr0 "/run/netns/$POD_A"
run cnitool del lo "/run/netns/$POD_A"
run ip netns exec "$POD_A" ip -br link
run ip netns exec "$NODE" ip -br link
note "reservations left: $(reservations | tr '\n' ' ')"

step "GC: cnitool passes no valid attachment, so pod B's (still cached) are collected too"
run cnitool gc cbr0 "/run/netns/$POD_B"
run cnitool gc lo "/run/netns/$POD_B"
run ip netns exec "$POD_B" ip -br addr
run ip netns exec "$NODE" ip -br link
left=$(reservations)
cached=$(ls "$VARLIB/cni/results" 2>/dev/null || true)
if [ -n "$left$cached" ]; then
	echo "demo FAILED: after GC, reservations [$left] and cached results [$cached] remain" >&2
	exit 1
fi
note "no reservation and no cached result left; cni0 stays on the node, as with the reference plugins"

step "Tear down and check that nothing is left behind"
note "deleting the namespaces $NODE, $POD_A, $POD_B (their links go with them) and $WORK"
cleanup
problems=""
leftover=$(ip netns list | grep "^$TAG-" || true)
[ -z "$leftover" ] || problems="$problems namespaces $leftover;"
[ "$(root_links)" = "$LINKS_BEFORE" ] || problems="$problems the root namespace's links changed;"
[ ! -e "$WORK" ] || problems="$problems $WORK;"
[ "$(machine_files)" = "$FILES_BEFORE" ] || problems="$problems /var/lib/cni or /etc/cni/net.d changed;"
if [ -n "$problems" ]; then
	echo "demo FAILED: left behind:$problems" >&2
	exit 1
fi
note "no namespace $TAG-* remains; the root namespace has the links it had before:" $LINKS_BEFORE
note "$WORK is gone; /var/lib/cni and /etc/cni/net.d of the machine were never touched"
printf '\ndemo finished: every step passed and nothing is left behind.\n'
