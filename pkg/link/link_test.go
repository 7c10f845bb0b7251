package link

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

func TestPrefixRoundTrip(t *testing.T) {
	for _, s := range []string{"10.1.0.5/24", "fd00::5/64", "0.0.0.0/0", "::/0"} {
		p := netip.MustParsePrefix(s)
		back, err := Prefix(IPNet(p))
		if err != nil || back != p {
			t.Errorf("%s -> %v -> %v, %v", s, IPNet(p), back, err)
		}
	}
	// net.ParseCIDR gives IPv4 as 16 bytes with a 4-byte mask.
	ip, n, _ := net.ParseCIDR("10.2.0.7/16")
	n.IP = ip
	if p, err := Prefix(n); err != nil || p.String() != "10.2.0.7/16" {
		t.Errorf("16-byte IPv4: %v, %v", p, err)
	}
	if _, err := Prefix(nil); err == nil {
		t.Error("nil must fail")
	}
}

func TestSpoofCheckTeardownScript(t *testing.T) {
	listing := `table bridge nat { # handle 3
	chain PREROUTING { # handle 1
		type filter hook prerouting priority -300; policy accept;
		iifname "vethaa" jump cni-br-iface-c1-eth0 comment "macspoofchk-c1-eth0" # handle 4
		iifname "vethbb" jump cni-br-iface-c2-eth0 comment "macspoofchk-c2-eth0" # handle 7
	}
	chain cni-br-iface-c1-eth0 { # handle 2
		jump cni-br-iface-c1-eth0-mac comment "macspoofchk-c1-eth0" # handle 5
	}
	chain cni-br-iface-c1-eth0-mac { # handle 3
		drop comment "macspoofchk-c1-eth0" # handle 6
	}
}`
	got := SpoofCheck{ID: "c1-eth0"}.teardownScript(listing)
	want := "delete rule bridge nat PREROUTING handle 4\n" +
		"flush chain bridge nat cni-br-iface-c1-eth0\nflush chain bridge nat cni-br-iface-c1-eth0-mac\n" +
		"delete chain bridge nat cni-br-iface-c1-eth0\ndelete chain bridge nat cni-br-iface-c1-eth0-mac\n"
	if got != want {
		t.Errorf("script:\n%s\nwant:\n%s", got, want)
	}
	if s := (SpoofCheck{ID: "c9-eth0"}).teardownScript(listing); s != "" {
		t.Errorf("unknown attachment produced %q", s)
	}
}

// TestLinksInNamespace exercises the kernel-facing helpers in a namespace.
func TestLinksInNamespace(t *testing.T) {
	node := netnstest.New(t, "link-node")
	pod := netnstest.New(t, "link-pod")
	podNS, err := os.Open(pod.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	node.Do(t, func() error {
		br, err := EnsureBridge(BridgeOptions{Name: "br-test", MTU: 1400})
		if err != nil {
			return err
		}
		if again, err := EnsureBridge(BridgeOptions{Name: "br-test", MTU: 1300, Promisc: true}); err != nil || again.MTU != 1300 || again.Promisc == 0 || again.Index != br.Index {
			t.Errorf("reuse: %+v, %v", again, err)
		}
		host, err := CreateVeth(VethOptions{PeerName: "eth0", Peer: podNS, MTU: 1300})
		if err != nil {
			return err
		}
		if !strings.HasPrefix(host.Attrs().Name, "veth") || len(host.Attrs().Name) != 12 {
			t.Errorf("host veth name %q", host.Attrs().Name)
		}
		if _, err := CreateVeth(VethOptions{PeerName: "eth0", Peer: podNS}); !errors.Is(err, ErrNameTaken) {
			t.Errorf("second eth0: %v, want ErrNameTaken", err)
		}
		if err := AttachToBridge(host, br, PortOptions{Hairpin: true}); err != nil {
			return err
		}
		gw := netip.MustParsePrefix("10.7.0.1/24")
		if err := EnsureAddr(br, gw, nil, false); err != nil {
			return err
		}
		var conflict *AddrConflictError
		err = EnsureAddr(br, netip.MustParsePrefix("10.8.0.1/24"), nil, false)
		if !errors.As(err, &conflict) || conflict.Have != gw || !strings.Contains(err.Error(), `"br-test" already has an IP address different from 10.8.0.1/24`) {
			t.Errorf("conflict: %v", err)
		}
		if err := EnsureAddr(br, netip.MustParsePrefix("10.8.0.1/24"), nil, true); err != nil {
			t.Errorf("forced: %v", err)
		}
		// IPv6 addresses in other subnets coexist.
		for _, p := range []string{"fd00:1::1/64", "fd00:2::1/64"} {
			if err := EnsureAddr(br, netip.MustParsePrefix(p), nil, false); err != nil {
				t.Errorf("%s: %v", p, err)
			}
		}
		for range 2 {
			if err := DeleteIfExists(host.Attrs().Name); err != nil {
				t.Errorf("DeleteIfExists: %v", err)
			}
		}
		return nil
	})
	if out := pod.Run(t, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Errorf("deleting the host side left the peer:\n%s", out)
	}
	out := node.Run(t, "ip", "addr", "show", "br-test")
	if strings.Contains(out, "10.7.0.1") || !strings.Contains(out, "10.8.0.1/24") || !strings.Contains(out, "fd00:1::1/64") {
		t.Errorf("bridge addresses:\n%s", out)
	}
}

// Sysctl writes a shorter value over a longer one (at offset 0, read from
// the same descriptor) and takes a read-only key that already holds the
// value.
func TestSysctl(t *testing.T) {
	ns := netnstest.New(t, "link-sysctl")
	const key = "net/ipv4/neigh/lo/base_reachable_time_ms"
	ns.Do(t, func() error {
		for _, v := range []string{"30000", "5000", "30000"} {
			if err := Sysctl(key, v); err != nil {
				return err
			}
			if got, err := ReadSysctl(key); err != nil || got != v {
				t.Errorf("after Sysctl %s=%s: %q %v", key, v, got, err)
			}
		}
		return nil
	})
	os, err := ReadSysctl("kernel/ostype")
	if err != nil {
		t.Fatal(err)
	}
	if err := Sysctl("kernel/ostype", os); err != nil {
		t.Errorf("a read-only key already holding the value: %v", err)
	}
	if err := Sysctl("kernel/ostype", os+"x"); err == nil {
		t.Error("a read-only key took a new value")
	}
}
