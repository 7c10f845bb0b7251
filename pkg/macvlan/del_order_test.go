package macvlan

import (
	"os"
	"path/filepath"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// probeIPAM is an IPAM plugin that notes, on DEL, whether the container's
// interface still exists, after a pause in which a deletion of the link run
// at the same time would have finished: dhcp needs the interface then, to
// send its DHCPRELEASE through it.
const probeIPAM = `#!/bin/sh
if [ "$CNI_COMMAND" = DEL ]; then
	sleep 0.3
	if nsenter --net="$CNI_NETNS" ip link show "$CNI_IFNAME" >/dev/null 2>&1; then
		echo present >>"$LOG"
	else
		echo absent >>"$LOG"
	fi
fi
echo '{"cniVersion":"1.1.0","ips":[{"address":"10.99.0.2/24"}]}'
`

// TestDelReleasesBeforeTheLinkGoes: an IPAM plugin other than host-local
// and static is released while the container's macvlan still exists, and the
// macvlan goes after it. macvlan used to release and delete at the same time.
func TestDelReleasesBeforeTheLinkGoes(t *testing.T) {
	e := newEnv(t)
	e.path = t.TempDir()
	if err := os.WriteFile(filepath.Join(e.path, "probe-ipam"), []byte(probeIPAM), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "del.log")
	t.Setenv("LOG", log) // Delegate passes the environment on
	conf := e.conf(map[string]any{"ipam": map[string]any{"type": "probe-ipam"}})
	pod := netnstest.New(t, "mv-pod")
	e.mustAdd(e.args(pod, "c1", conf))
	if err := e.del(e.args(pod, "c1", conf)); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got, _ := os.ReadFile(log); string(got) != "present\n" {
		t.Errorf("the IPAM plugin saw the container's interface %q at DEL, want present", got)
	}
	e.assertClean([]*netnstest.NS{pod})
}
