#!/usr/bin/env bash
# make demo: a Kubernetes-style cluster in a box. Three nodes (network
# namespaces) joined by an underlay namespace where etcd runs; subnetd on
# every node leases the node's pod subnets and wires the vxlan overlay; pods
# are attached with conf/10-flannel.conflist (flannel + portmap) by cnitool,
# as kubelet's runtime would. Everything lives in namespaces, private mount
# namespaces and a temporary directory that this script creates and always
# deletes, also on failure or Ctrl-C. Usage: scripts/demo.sh BIN_DIR
# (KEEP_LOGS=DIR: on failure, copy the work directory with every log there).
set -euo pipefail

BIN=$(cd "${1:?usage: demo.sh BIN_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUBNETD=$BIN/daemon/subnetd
# The release of the libcni in go.mod, so that the demo and the tests use one client.
CNITOOL_VERSION=v1.3.0

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root: it creates network namespaces" >&2
	exit 1
fi
for cmd in etcd python3 unshare ping iptables; do
	command -v "$cmd" >/dev/null || { echo "demo: $cmd is missing; run make demo (it installs DEB_PKGS)" >&2; exit 1; }
done
[ -x "$SUBNETD" ] || { echo "demo: $SUBNETD is missing; run make demo (it builds it)" >&2; exit 1; }

START=$(date +%s.%N)
TAG=cnidemo-$$
UL=$TAG-underlay # the network between the nodes, where etcd runs
OUT=$TAG-outside # a machine outside the cluster, on the underlay
NODES="1 2 3"
PODS="n1a n1b n2a n2b n3a n3b" # two pods per node: n<node><letter>
UL4=192.168.77                 # underlay: .1 etcd, .1N node N, .100 outside
UL6=fd00:77:
ETCD=http://$UL4.1:2379
HEALTHZ=127.0.0.1:8471 # subnetd's /readyz, as in conf/subnetd.service
HOSTPORT=8080
WORK=$(mktemp -d /tmp/cni-demo.XXXXXX)
# etcd's data on tmpfs: the demo's etcd keeps nothing worth a disk, and its
# fsyncs on a busy disk can stall it (and every subnetd) for seconds.
ETCD_DATA=$(mktemp -d /dev/shm/cni-demo-etcd.XXXXXX 2>/dev/null || mktemp -d "$WORK/etcd.XXXXXX")
TOOL=$WORK/tool/cnitool
PIDS="" # every process started here, killed by PID at the end

ns() { echo "$TAG-$1"; } # ns node1, ns n1a, ...

cleanup() {
	local pid n
	for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
	for pid in $PIDS; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	done
	for n in $PODS $(for i in $NODES; do echo node$i; done) outside underlay; do
		ip netns delete "$(ns "$n")" 2>/dev/null || true
	done
	rm -rf "$WORK" "$ETCD_DATA"
}
trap 'rc=$?; trap - EXIT; [ -z "${KEEP_LOGS:-}" ] || cp -r "$WORK" "$KEEP_LOGS"; cleanup; [ $rc -eq 0 ] || echo "demo: stopped (exit $rc); namespaces $TAG-*, processes and $WORK deleted" >&2; exit $rc' EXIT
trap 'exit 130' INT TERM HUP

step=0
since() { awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
step() {
	step=$((step + 1))
	printf '\n== %d. %s  [%ss]\n' "$step" "$*" "$(since)"
}
note() { printf '   %s\n' "$*"; }
indent() { sed 's/^/     /'; }
fail() {
	printf '\ndemo FAILED at step %d: %s\n' "$step" "$*" >&2
	exit 1
}

# run prints a command, runs it and prints its output indented.
run() {
	printf '   $ %s\n' "$*"
	local out
	if ! out=$("$@" 2>&1); then
		printf '%s\n' "$out" | indent
		fail "$*"
	fi
	[ -z "$out" ] || printf '%s\n' "$out" | indent
}

in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

# run_in N CMD...: run CMD inside namespace N, shown with N as the prompt.
run_in() {
	local n=$1 out
	shift
	printf '   %s$ %s\n' "$n" "$*"
	if ! out=$(in_ns "$n" "$@" 2>&1); then
		printf '%s\n' "$out" | indent
		fail "in $n: $*"
	fi
	[ -z "$out" ] || printf '%s\n' "$out" | indent
}

# helper.py: HTTP from inside a namespace, etcd's JSON gateway, conflist rendering.
cat >"$WORK/helper.py" <<'EOF'
import base64, json, sys, urllib.request
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "get":  # get URL: print the body; fail on error
    print(urllib.request.urlopen(args[0], timeout=3).read().decode().strip())
elif cmd == "leases":  # leases ENDPOINT PREFIX: the lease keys and their PublicIP
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    body = json.dumps({"key": b64(args[1]), "range_end": b64(args[1][:-1] + chr(ord(args[1][-1]) + 1))}).encode()
    r = json.load(urllib.request.urlopen(args[0] + "/v3/kv/range", body, timeout=3))
    for kv in r.get("kvs", []):
        v = json.loads(base64.b64decode(kv["value"]))
        print(base64.b64decode(kv["key"]).decode(), " PublicIP", v.get("PublicIP"), " PublicIPv6", v.get("PublicIPv6"))
elif cmd == "render":  # render SRC DST SUBNETFILE: the conflist with subnetFile set
    conf = json.load(open(args[0]))
    for p in conf["plugins"]:
        if p["type"] == "flannel":
            p["subnetFile"] = args[2]
    json.dump(conf, open(args[1], "w"), indent=2)
elif cmd == "cid":  # cid NETNS_PATH: the container ID cnitool gives an attachment
    import hashlib
    print("cnitool-" + hashlib.sha512(args[0].encode()).digest()[:10].hex())
elif cmd == "addrs":  # addrs: the pod addresses of a CNI result on stdin
    print(" ".join(ip["address"] for ip in json.load(sys.stdin)["ips"]))
EOF
helper() { python3 "$WORK/helper.py" "$@"; }

# cnitool N VERB POD [CAP_ARGS]: cnitool inside node N, in a private mount
# namespace where /var/lib is the node's directory: the runtime's cache
# (/var/lib/cni/results), flannel's saved configurations
# (/var/lib/cni/flannel) and host-local's reservations (/var/lib/cni/networks)
# stay there. NETCONFPATH is the node's /etc/cni/net.d.
cnitool() {
	local node=$1 verb=$2 pod=$3 caps=${4:-}
	unshare --mount --propagation private -- sh -c 'mount --bind "$0" /var/lib && exec "$@"' "$WORK/node$node/var-lib" \
		ip netns exec "$(ns "node$node")" env CNI_PATH="$BIN" NETCONFPATH="$WORK/node$node/net.d" CAP_ARGS="$caps" \
		"$TOOL" "$verb" cbr0 "/run/netns/$(ns "$pod")"
}

# start_bg LOG NS CMD...: a process inside a namespace, remembered by PID
# (ip netns exec execs the command, so the PID is the command's).
start_bg() {
	local log=$1 n=$2
	shift 2
	ip netns exec "$(ns "$n")" "$@" >"$log" 2>&1 &
	PIDS="$PIDS $!"
	LAST_PID=$!
}

# wait_for WHAT SECONDS CMD...: retry CMD every 0.2 s.
wait_for() {
	local what=$1 tries=$(($2 * 5))
	shift 2
	for _ in $(seq "$tries"); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	tail -n 5 "$WORK"/node*/subnetd.log "$WORK/etcd.log" 2>/dev/null | indent
	fail "timed out waiting for $what"
}

start_subnetd() {
	local i=$1
	start_bg "$WORK/node$i/subnetd.log" "node$i" "$SUBNETD" --etcd-endpoints "$ETCD" --iface eth0 \
		--net-config "$ROOT/conf/net-conf.json" --subnet-file "$WORK/node$i/subnet.env" --data-dir "$WORK/node$i/subnetd" \
		--node-id "node$i" --ip-masq --healthz-ip 127.0.0.1 --healthz-port "${HEALTHZ#*:}"
	eval "SUBNETD_PID$i=$LAST_PID"
}

subnet_of() { sed -n "s/^$2=//p" "$WORK/node$1/subnet.env"; }
root_links() { ip -o link show | awk -F': ' '{ print $2 }' | sort | tr '\n' ' '; }
machine_state() { ls -d /var/lib/cni /etc/cni/net.d /run/flannel 2>/dev/null | tr '\n' ' ' || true; }

LINKS_BEFORE=$(root_links)
STATE_BEFORE=$(machine_state)

step "Build cnitool $CNITOOL_VERSION (the CNI project's client, as an operator uses it) from the Go module proxy"
run env GOBIN="$WORK/tool" go install "github.com/containernetworking/cni/cnitool@$CNITOOL_VERSION"

step "The underlay: a namespace with a bridge joining the nodes; etcd runs there"
ip netns add "$(ns underlay)"
in_ns underlay ip link set lo up
in_ns underlay ip link add br0 type bridge
in_ns underlay ip addr add "$UL4.1/24" dev br0
in_ns underlay ip link set br0 up
start_bg "$WORK/etcd.log" underlay etcd --data-dir "$ETCD_DATA" --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380
wait_for "etcd" 20 in_ns underlay python3 "$WORK/helper.py" get "$ETCD/health"
note "underlay $UL4.0/24 and ${UL6}:/64 on br0; etcd $(etcd --version | sed -n 's/etcd Version: //p') serving $ETCD (log: etcd.log)"

# add_host N NAME ADDR: a namespace with eth0 on the underlay.
add_host() {
	local name=$1 last=$2 peer=$3
	ip netns add "$(ns "$name")"
	in_ns "$name" ip link set lo up
	in_ns underlay ip link add "$peer" type veth peer name eth0 netns "$(ns "$name")"
	in_ns underlay ip link set "$peer" master br0 up
	in_ns "$name" ip addr add "$UL4.$last/24" dev eth0
	in_ns "$name" ip addr add "$UL6:$last/64" dev eth0 nodad
	in_ns "$name" ip link set eth0 up
}

step "Three nodes on the underlay, subnetd on each (the network config is conf/net-conf.json)"
run cat "$ROOT/conf/net-conf.json"
for i in $NODES; do
	mkdir -p "$WORK/node$i/var-lib" "$WORK/node$i/net.d"
	add_host "node$i" "1$i" "ulv$i"
	in_ns "node$i" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	start_subnetd "$i"
	note "node$i: eth0 $UL4.1$i ${UL6}:1$i; subnetd --etcd-endpoints $ETCD --iface eth0 --ip-masq --node-id node$i (PID $LAST_PID)"
done
for i in $NODES; do
	wait_for "subnetd on node$i to be ready" 30 in_ns "node$i" python3 "$WORK/helper.py" get "http://$HEALTHZ/readyz"
	note "node$i ready at $(since)s"
done
note "every subnetd answers /readyz. Each wrote the node's subnet.env (/run/flannel/subnet.env on a real node):"
SUBNETS=""
for i in $NODES; do
	note "node$i: $(tr '\n' ' ' <"$WORK/node$i/subnet.env")"
	SUBNETS="$SUBNETS$(printf '\n  %-10s node%s: %s %s' "" "$i" "$(subnet_of "$i" FLANNEL_SUBNET)" "$(subnet_of "$i" FLANNEL_IPV6_SUBNET)")"
done
note "the leases in etcd, flanneld's layout:"
helper_in_ul() { in_ns underlay python3 "$WORK/helper.py" "$@"; }
helper_in_ul leases "$ETCD" /coreos.com/network/subnets/ | indent
note "node1's overlay: one route, neighbour and FDB entry per other node, kept in step with the leases:"
run_in node1 ip route show dev flannel.1
run_in node1 ip -6 route show dev flannel-v6.1 proto 83
run_in node1 ip neigh show dev flannel.1
run_in node1 bridge fdb show dev flannel.1

step "Install the CNI configuration on every node: conf/10-flannel.conflist, as kubelet's runtime reads it"
run cat "$ROOT/conf/10-flannel.conflist"
for i in $NODES; do
	helper render "$ROOT/conf/10-flannel.conflist" "$WORK/node$i/net.d/10-flannel.conflist" "$WORK/node$i/subnet.env"
done
note "Each node's copy differs in one key: \"subnetFile\" names that node's subnet.env in $WORK."
note "Below, 'cnitool N' is: ip netns exec node<N> cnitool, with CNI_PATH=$BIN, NETCONFPATH=<node>/net.d,"
note "in a private mount namespace where /var/lib is <node>/var-lib (the runtime's cache, flannel's and host-local's state)."

step "ADD two pods per node: flannel renders a bridge + host-local configuration from subnet.env and delegates; portmap follows"
declare -A ADDR
for p in $PODS; do
	node=${p:1:1}
	ip netns add "$(ns "$p")"
	in_ns "$p" ip link set lo up # the runtime's job, before CNI runs
	caps=""
	[ "$p" != n1a ] || caps='{"portMappings":[{"hostPort":'$HOSTPORT',"containerPort":80,"protocol":"tcp"}]}'
	if ! res=$(cnitool "$node" add "$p" "$caps" 2>&1); then
		printf '%s\n' "$res" | indent
		fail "cnitool $node add $p"
	fi
	ADDR[$p]=$(printf '%s' "$res" | helper addrs)
	if [ "$p" = n1a ]; then
		note "\$ cnitool 1 add cbr0 /run/netns/$(ns n1a)   (CAP_ARGS: hostPort $HOSTPORT -> 80)"
		printf '%s\n' "$res" | indent
	fi
	note "pod $p on node$node: ${ADDR[$p]}"
done
saved="$(helper cid "/run/netns/$(ns n1a)")-eth0"
note "what flannel gave the bridge plugin for pod n1a, saved for its DEL as node1's /var/lib/cni/flannel/$saved:"
python3 -m json.tool "$WORK/node1/var-lib/cni/flannel/$saved" | indent
run_in node1 ip -br addr show cni0
run_in node1 bridge link show

step "Ping every pod from every other pod, IPv4 and IPv6, across the three nodes"
header="   from \\ to"
for q in $PODS; do header="$header $(printf '%5s' "$q")"; done
echo "$header"
PINGS_OK=0
PINGS=0
for p in $PODS; do
	line="   $(printf '%-10s' "$p")"
	for q in $PODS; do
		if [ "$p" = "$q" ]; then
			line="$line $(printf '%5s' -)"
			continue
		fi
		cell=""
		for a in ${ADDR[$q]}; do
			PINGS=$((PINGS + 1))
			if in_ns "$p" ping -c 1 -w 3 "${a%/*}" >/dev/null 2>&1; then
				PINGS_OK=$((PINGS_OK + 1))
			elif [[ $a == *:* ]]; then
				cell="${cell}v6!"
			else
				cell="${cell}v4!"
			fi
		done
		line="$line $(printf '%5s' "${cell:-ok}")"
	done
	echo "$line"
done
[ "$PINGS_OK" -eq "$PINGS" ] || fail "$((PINGS - PINGS_OK)) of $PINGS pings unanswered"
note "$PINGS_OK/$PINGS pings answered (each cell: one IPv4 and one IPv6 ping; same-node pairs cross cni0, the rest the vxlan overlay)"

step "A hostPort from outside the cluster: a machine on the underlay reaches pod n1a's web server through node1:$HOSTPORT"
add_host outside 100 ulout
mkdir -p "$WORK/www"
echo "hello from pod n1a on node1" >"$WORK/www/index.html"
start_bg "$WORK/http.log" n1a python3 -m http.server 80 --bind :: --directory "$WORK/www"
wait_for "the web server in pod n1a" 10 in_ns n1a python3 "$WORK/helper.py" get http://127.0.0.1:80/
HOSTPORT_OUT=""
for target in "$UL4.11:$HOSTPORT" "[${UL6}:11]:$HOSTPORT"; do
	printf '   $ ip netns exec outside: GET http://%s/\n' "$target"
	body=$(in_ns outside python3 "$WORK/helper.py" get "http://$target/" 2>&1) || { echo "$body" | indent; fail "GET http://$target/ from outside"; }
	echo "$body" | indent
	HOSTPORT_OUT="${HOSTPORT_OUT:+$HOSTPORT_OUT and }$target"
done
note "portmap's DNAT rules on node1:"
in_ns node1 iptables-save -t nat | grep -e "--dport $HOSTPORT" | indent

step "CHECK every attachment and the network's STATUS through cnitool (silence means OK)"
for p in $PODS; do
	out=$(cnitool "${p:1:1}" check "$p" 2>&1) || { echo "$out" | indent; fail "CHECK of $p"; }
done
out=$(cnitool 1 status n1a 2>&1) || { echo "$out" | indent; fail "STATUS"; }
note "CHECK ok for the $(echo $PODS | wc -w) pods; STATUS ok"

step "A node whose subnet daemon is not running: what ADD says (which daemon to check; never copy subnet.env from another node)"
mkdir -p "$WORK/nodeless/net.d"
helper render "$ROOT/conf/10-flannel.conflist" "$WORK/nodeless/net.d/10-flannel.conflist" "$WORK/nodeless/subnet.env"
python3 - "$WORK/nodeless/net.d/10-flannel.conflist" <<'EOF'
import json, sys
conf = json.load(open(sys.argv[1]))
conf["plugins"][0]["subnetFileWait"] = "1s"  # the default waits 5 s for the daemon
json.dump(conf, open(sys.argv[1], "w"), indent=2)
EOF
ip netns add "$(ns nodeless)"
PODS="$PODS nodeless" # deleted with the others
if out=$(unshare --mount --propagation private -- sh -c 'mount --bind "$0" /var/lib && exec "$@"' "$WORK/node3/var-lib" \
	ip netns exec "$(ns node3)" env CNI_PATH="$BIN" NETCONFPATH="$WORK/nodeless/net.d" "$TOOL" add cbr0 "/run/netns/$(ns nodeless)" 2>&1); then
	fail "ADD without subnet.env succeeded"
fi
printf '%s\n' "$out" | fold -s -w 110 | indent
note "(code 11: the runtime retries; the file is named, with how to check this node's daemon)"

step "Restart subnetd on node1 while pod n2a pings pod n1a: the data plane stays, so no ping is lost"
target=$(printf '%s' "${ADDR[n1a]}" | awk '{ sub("/.*", "", $1); print $1 }')
lease_before=$(subnet_of 1 FLANNEL_SUBNET)
ip netns exec "$(ns n2a)" ping -i 0.2 -w 8 "$target" >"$WORK/restart-ping.log" 2>&1 &
PING_PID=$!
PIDS="$PIDS $PING_PID"
sleep 1
kill "$SUBNETD_PID1"
for _ in $(seq 50); do kill -0 "$SUBNETD_PID1" 2>/dev/null || break; sleep 0.1; done
note "subnetd on node1 stopped (SIGTERM): the lease, flannel.1, routes and rules stay"
sleep 1
start_subnetd 1
wait_for "subnetd on node1 to be ready again" 30 in_ns node1 python3 "$WORK/helper.py" get "http://$HEALTHZ/readyz"
note "subnetd on node1 started again (PID $SUBNETD_PID1) and ready"
wait "$PING_PID" || true
tail -n 2 "$WORK/restart-ping.log" | indent
RESTART_STATS=$(awk '/packets transmitted/ { print $4 "/" $1 }' "$WORK/restart-ping.log")
grep -q ' 0% packet loss' "$WORK/restart-ping.log" || fail "pings were lost across the restart"
lease_after=$(subnet_of 1 FLANNEL_SUBNET)
[ "$lease_before" = "$lease_after" ] || fail "node1's subnet changed across the restart: $lease_before -> $lease_after"
note "node1 kept its subnet $lease_after"

step "DEL every pod (cnitool del), as the runtime does when pods go"
for p in n1a n1b n2a n2b n3a n3b; do
	out=$(cnitool "${p:1:1}" del "$p" 2>&1) || { echo "$out" | indent; fail "DEL of $p"; }
done
left=$(ls "$WORK"/node*/var-lib/cni/flannel/ "$WORK"/node*/var-lib/cni/results/ 2>/dev/null | grep -v -e '^/' -e '^$' || true)
reserved=$(ls "$WORK"/node*/var-lib/cni/networks/cbr0/ 2>/dev/null | grep -v -e '^/' -e '^$' -e '^lock$' -e '^last_reserved_ip' || true)
[ -z "$left$reserved" ] || fail "after DEL: saved configurations or cached results [$left], reservations [$reserved]"
note "no saved configuration, cached result or address reservation is left on any node"

step "Tear down and check that nothing is left behind"
note "stopping etcd, the subnetds and the web server; deleting the namespaces $TAG-*, $WORK and $ETCD_DATA"
ALL_PIDS=$PIDS
trap - EXIT
cleanup
problems=""
leftover=$(ip netns list | grep "^$TAG-" || true)
[ -z "$leftover" ] || problems="$problems namespaces: $leftover;"
for pid in $ALL_PIDS; do
	if kill -0 "$pid" 2>/dev/null; then problems="$problems process $pid;"; fi
done
[ "$(root_links)" = "$LINKS_BEFORE" ] || problems="$problems the root namespace's links changed;"
[ ! -e "$WORK" ] || problems="$problems $WORK;"
[ ! -e "$ETCD_DATA" ] || problems="$problems $ETCD_DATA;"
[ "$(machine_state)" = "$STATE_BEFORE" ] || problems="$problems /var/lib/cni, /etc/cni/net.d or /run/flannel changed;"
if [ -n "$problems" ]; then
	echo "demo FAILED: left behind:$problems" >&2
	exit 1
fi
note "no namespace $TAG-*, no process of the demo; the root namespace has the links it had: $LINKS_BEFORE"
note "$WORK and $ETCD_DATA are gone; /var/lib/cni, /etc/cni/net.d and /run/flannel of the machine were never touched"

elapsed=$(since)
cat <<EOF

==================================== cluster in a box ====================================
  nodes      3, each with the subnets subnetd leased for it in etcd (gateway addresses shown),
             joined by the vxlan overlay over the underlay:$SUBNETS
  pods       6, two per node, dual-stack, attached by cnitool with conf/10-flannel.conflist
  pings      $PINGS_OK/$PINGS answered (pod to pod, IPv4 and IPv6, same node and across nodes)
  hostPort   outside -> $HOSTPORT_OUT -> pod n1a:80 answered
  restart    subnetd on node1 restarted under traffic: $RESTART_STATS pings answered, subnet kept
  errors     ADD on a node without its daemon: code 11 naming subnet.env and how to check the daemon
  teardown   every pod DELeted; no namespace, link, process or temporary file left
  duration   ${elapsed} s
===========================================================================================
EOF
