package bridge

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/testutil"
	"github.com/cnisuite/cni/pkg/link"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// loggingIPAM is an IPAM plugin that notes each verb it is run with, for
// the case of an IPAM plugin, like dhcp, that works through the container's
// interface and so must not run before it exists.
const loggingIPAM = `#!/bin/sh
echo "$CNI_COMMAND" >>"$LOG"
echo '{"cniVersion":"1.1.0","ips":[{"address":"10.99.0.2/24"}]}'
`

// TestIPAMWhenTheLinksFail makes the link setup fail (the container already
// has an eth0) and checks which IPAM plugins ran: host-local runs at the
// same time as the link setup, so it reserved an address that the failed ADD
// must release; any other IPAM plugin runs only once the container's
// interface exists, so it must never have been called.
func TestIPAMWhenTheLinksFail(t *testing.T) {
	for _, tc := range []struct {
		ipam     string
		wantVerb string // what the logging plugin saw; "" for not run
	}{
		{"host-local", ""},
		{"logging-ipam", ""},
	} {
		t.Run(tc.ipam, func(t *testing.T) {
			e := newEnv(t)
			e.path = testutil.Plugins(t, "plugins/ipam/host-local")
			conf := e.conf(nil, "10.244.1.0/24")
			if tc.ipam != "host-local" {
				e.path = t.TempDir()
				if err := os.WriteFile(filepath.Join(e.path, tc.ipam), []byte(loggingIPAM), 0o755); err != nil {
					t.Fatal(err)
				}
				conf = e.conf(map[string]any{"ipam": map[string]any{"type": tc.ipam}})
			}
			log := filepath.Join(t.TempDir(), "verbs.log")
			t.Setenv("LOG", log) // Delegate passes the environment on
			pod := netnstest.New(t, "br-pod")
			pod.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
			_, err := e.add(e.args(pod, "c1", conf))
			if !errors.Is(err, link.ErrNameTaken) {
				t.Fatalf("ADD with eth0 taken: %v, want %v", err, link.ErrNameTaken)
			}
			// An IPAM run left behind would reserve a little later: look
			// again after it had ample time to finish.
			e.assertClean()
			time.Sleep(300 * time.Millisecond)
			e.assertClean()
			got, _ := os.ReadFile(log)
			if string(got) != tc.wantVerb {
				t.Errorf("%s was run with %q before the container's interface existed", tc.ipam, got)
			}
		})
	}
}
