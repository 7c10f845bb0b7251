package reliability

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSubnetdBadFlags: every invalid flag makes subnetd exit 2 at once with
// a message naming the flag, before it touches anything.
func TestSubnetdBadFlags(t *testing.T) {
	bin, err := buildSubnetd()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string // in the message
	}{
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--healthz-port", "70000"}, "--healthz-port"},
		{[]string{"--healthz-ip", "not-an-ip", "--healthz-port", "1"}, "--healthz-ip"},
		{[]string{"--lease-ttl", "-1s"}, "--lease-ttl"},
		{[]string{"--lease-ttl", "forever"}, "lease-ttl"},
		{[]string{"--subnet-lease-renew-margin", "0"}, "--subnet-lease-renew-margin"},
		{[]string{"--check-interval", "0s"}, "--check-interval"},
		{[]string{"--etcd-certfile", "/x"}, "--etcd-keyfile"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--etcd-endpoints", "::bad"}, "--etcd-endpoints"},
		{[]string{"--etcd-endpoints", "http://127.0.0.1"}, "--etcd-endpoints"},
		{[]string{"--etcd-endpoints", "ftp://127.0.0.1:2379"}, "--etcd-endpoints"},
		{[]string{"--public-ip", "10.0.0.300"}, "--public-ip"},
		{[]string{"--node-id", "a b"}, "--node-id"},
		{[]string{"--embedded-etcd-client", "0.0.0.0:2379"}, "embedded etcd"},
		{[]string{"--subnet-file", ""}, "--subnet-file"},
		{[]string{"extra-argument"}, "unexpected arguments"},
		{[]string{"--healthz-port", strings.Repeat("9", 100)}, "healthz-port"},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		cmd := exec.CommandContext(ctx, bin, append(c.args, "--data-dir", t.TempDir())...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("%q: exit %d (%v), want 2:\n%s", c.args, code, err, out.String())
			continue
		}
		if msg := out.String(); !strings.Contains(msg, c.want) || strings.Contains(msg, "panic") {
			t.Errorf("%q: message does not name %q:\n%s", c.args, c.want, msg)
		}
	}
}

// TestSubnetdBadEtcdValues: a malformed network config in etcd keeps
// subnetd unready with an error naming the key, and it gets ready once the
// config is fixed; malformed peer leases are skipped, not fatal, while the
// valid ones are routed.
func TestSubnetdBadEtcdValues(t *testing.T) {
	t.Parallel() // waits on its own daemons, in namespaces of its own
	n := newDaemonNode(t)
	n.startEtcd("etcd", "http://127.0.0.1:2379")
	const configKey = "/coreos.com/network/config"
	for _, bad := range []string{`{"Network":`, `{"Network":"10.95.0.0/33"}`, `{"Network":"10.95.0.0/16","Backend":{"Type":"carrier-pigeon"}}`, `[]`} {
		n.etcd("/v3/kv/put", map[string]any{"key": b64(configKey), "value": b64(bad)})
		sd := n.startSubnetd("subnetd-badconfig")
		time.Sleep(3 * time.Second)
		if n.ready("127.0.0.1:9090") || sd.exited() && strings.Contains(sd.output(), "panic") {
			t.Errorf("config %s: subnetd ready or crashed:\n%s", bad, sd.output())
		}
		if out := sd.output(); !strings.Contains(out, "config") {
			t.Errorf("config %s: the error does not name the network config:\n%s", bad, out)
		}
		sd.stop()
	}
	n.etcd("/v3/kv/put", map[string]any{"key": b64(configKey), "value": b64(netConf)})

	badLeases := map[string]string{
		"10.95.20.0-24": "not json",
		"10.95.21.0-24": `{"PublicIP":"999.1.1.1","BackendType":"vxlan","BackendData":{"VtepMAC":"0a:00:00:00:00:21"}}`,
		"10.95.22.0-24": `{"PublicIP":"192.168.76.122","BackendType":"vxlan","BackendData":{"VtepMAC":"not-a-mac"}}`,
		"10.95.23.0-99": `{"PublicIP":"192.168.76.123","BackendType":"vxlan","BackendData":{"VtepMAC":"0a:00:00:00:00:23"}}`,
		"garbage-key":   `{"PublicIP":"192.168.76.124","BackendType":"vxlan","BackendData":{"VtepMAC":"0a:00:00:00:00:24"}}`,
		"10.95.25.0-24": `{"PublicIP":"192.168.76.125","BackendType":"vxlan","BackendData":` + strings.Repeat("[", 10000) + `}`,
		"10.95.26.0-24": `{"PublicIP":"192.168.76.126","BackendType":"vxlan","BackendData":{"VtepMAC":"` + strings.Repeat("a", 1<<20) + `"}}`,
	}
	for key, v := range badLeases {
		n.etcd("/v3/kv/put", map[string]any{"key": b64(subnetsPrefix + key), "value": b64(v)})
	}
	n.putPeer(1)
	sd := n.startSubnetd("subnetd")
	n.eventually("ready with malformed leases around", 30*time.Second, func() bool { return n.ready("127.0.0.1:9090") })
	n.eventually("the valid peer routed", 20*time.Second, func() bool { return n.hasRoute(1) })
	n.putPeer(2)
	n.eventually("a later valid peer routed", 20*time.Second, func() bool { return n.hasRoute(2) })
	for i := 20; i < 27; i++ {
		if out, _ := n.ns.Try("ip", "route", "show", fmt.Sprintf("10.95.%d.0/24", i)); strings.TrimSpace(out) != "" {
			t.Errorf("route for the malformed lease 10.95.%d.0/24: %s", i, out)
		}
	}
	if sd.exited() || !n.ready("127.0.0.1:9090") {
		t.Fatalf("subnetd died or went unready:\n%s", sd.output())
	}
}
