package dhcp

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// dropAcks drops the server's DHCPACKs on their way out of srv, counting
// them: UDP from port 67 whose first option, where dnsmasq puts the message
// type, is 53 = 5 (past the 8 bytes of the UDP header, the 236 of BOOTP's
// fixed fields and the 4 of the magic cookie).
func dropAcks(t *testing.T, srv *netnstest.NS) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft (make deps installs nftables)")
	}
	srv.Run(t, "nft", "add table ip acklost")
	srv.Run(t, "nft", "add chain ip acklost out { type filter hook output priority 0 ; }")
	srv.Run(t, "nft", "add rule ip acklost out udp sport 67 @th,1984,24 0x350105 counter drop")
}

// TestAckLost: the server ACKs the ADD's REQUEST, and so holds a lease for
// the client, but the ACK never reaches the daemon, and the pod's interface
// goes meanwhile, as when the plugin that asked is killed and its interface
// plugin's ADD undoes itself (e2e's TestKillSafety found it). The ADD fails
// soon after the interface went, not at the end of the daemon's
// -resendtimeout, which would hold up the runtime's DEL as long; and the
// daemon releases what it requested, so the server keeps no lease nobody
// holds.
func TestAckLost(t *testing.T) {
	e := newEnv(t)
	e.StopDaemon()
	e.StartDaemon(e.node, "-resendtimeout", "30s")
	dropAcks(t, e.srv)
	done := make(chan error, 1)
	go func() {
		_, err := dhcpclient.Plugin{}.Add(context.Background(), e.args("ADD", "c1", e.conf("1.1.0", nil)))
		done <- err
	}()
	e.WaitLeases("the server ACKs and commits a lease", 10*time.Second, func(l map[string]string) bool { return len(l) == 1 })
	e.pod.Run(t, "ip", "link", "del", "eth0")
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("ADD succeeded with the ACKs dropped:\n%s", e.srv.Run(t, "nft", "list", "ruleset"))
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("ADD still runs 10 s after its interface went (-resendtimeout is 30 s); daemon log:\n%s", e.Logs.String())
	}
	e.WaitLeases("the lease of the unheard ACK is released", 5*time.Second, func(l map[string]string) bool { return len(l) == 0 })
	if out := e.srv.Run(t, "nft", "list", "ruleset"); strings.Contains(out, "counter packets 0 ") {
		t.Errorf("no ACK was dropped:\n%s", out)
	}
}
