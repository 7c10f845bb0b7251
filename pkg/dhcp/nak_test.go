package dhcp

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/cnisuite/cni/pkg/dhcp/dhcptest"
)

// nakFirst serves DHCP on s0 in the server namespace, refusing the first
// REQUEST with a DHCPNAK, as a server does that offered the address to
// another client meanwhile; it returns the REQUEST count.
func (e *env) nakFirst() *atomic.Int32 {
	e.t.Helper()
	requests := &atomic.Int32{}
	server := net.ParseIP(dhcptest.ServerIP).To4()
	handler := func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		typ := dhcpv4.MessageTypeOffer
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
		case dhcpv4.MessageTypeRequest:
			if typ = dhcpv4.MessageTypeAck; requests.Add(1) == 1 {
				typ = dhcpv4.MessageTypeNak
			}
		default:
			return // the release
		}
		reply, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(typ), dhcpv4.WithYourIP(net.IPv4(10, 77, 0, 100)),
			dhcpv4.WithServerIP(server), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)), dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
			dhcpv4.WithOption(dhcpv4.OptRouter(server)), dhcpv4.WithLeaseTime(dhcptest.LeaseSecs))
		if err == nil {
			_, _ = conn.WriteTo(reply.ToBytes(), peer)
		}
	}
	e.srv.Do(e.t, func() error { // the socket is made there; it serves from any thread
		s, err := server4.NewServer("s0", &net.UDPAddr{Port: dhcpv4.ServerPort}, handler)
		if err == nil {
			go func() { _ = s.Serve() }()
			e.t.Cleanup(func() { s.Close() })
		}
		return err
	})
	return requests
}

// TestNakRestarts: after a DHCPNAK the daemon asks again at once, not
// after RFC 2131's retransmission delay (4 s +- 1 s): ADD succeeds with the
// second REQUEST's lease within well under that delay.
func TestNakRestarts(t *testing.T) {
	e := newNet(t)
	requests := e.nakFirst()
	e.StartDaemon(e.node)
	start := time.Now()
	r := e.add("c1", e.conf("1.1.0", nil))
	if took := time.Since(start); requests.Load() != 2 || took > 2*time.Second {
		t.Errorf("ADD gave %s after %d REQUESTs in %s, want the second's lease within 2 s", r.IPs[0].Address.IP, requests.Load(), took)
	}
}
