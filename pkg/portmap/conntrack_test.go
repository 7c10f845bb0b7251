package portmap

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// Both ways of flushing delete the UDP entries of the flushed ports and
// nothing else: not another port's, not TCP's of the same port.
func TestFlushPortsDeletesOnlyThePorts(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for name, flush := range map[string]func(family.Family, []uint16) error{
		"filtered flush": func(f family.Family, ports []uint16) error {
			for _, p := range ports {
				if err := filteredFlush(f, p); err != nil {
					return fmt.Errorf("filtered flush (the kernel needs 6.11 or later): %w", err)
				}
			}
			return nil
		},
		"dump and delete": dumpAndDelete,
	} {
		t.Run(name, func(t *testing.T) {
			ns := trackingNS(t)
			for _, port := range []int{7001, 7002, 7003} {
				ns.Do(t, func() error { return send("udp", port) })
			}
			ns.Do(t, func() error { return tcpFlow(t, 7001) })
			ns.Do(t, func() error { return flush(family.IPv4, []uint16{7001, 7003}) })
			var left string
			ns.Do(t, func() error {
				// thread-self: /proc/net is the main thread's namespace.
				b, err := os.ReadFile("/proc/thread-self/net/nf_conntrack")
				left = string(b)
				return err
			})
			for port, want := range map[string]bool{"udp 7001": false, "udp 7002": true, "udp 7003": false, "tcp 7001": true} {
				proto, p, _ := strings.Cut(port, " ")
				if got := tracked(left, proto, p); got != want {
					t.Errorf("%s tracked after the flush: %v, want %v\n%s", port, got, want, left)
				}
			}
		})
	}
}

// trackingNS is a namespace whose traffic to its own bridge address is
// tracked: a NAT rule makes the kernel track connections there.
func trackingNS(t *testing.T) *netnstest.NS {
	ns := netnstest.New(t, "ct")
	for _, cmd := range [][]string{
		{"ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "addr", "add", "10.9.0.1/24", "dev", "br0"},
		{"ip", "link", "set", "br0", "up"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "nowhere", "-j", "MASQUERADE"},
	} {
		ns.Run(t, cmd...)
	}
	return ns
}

func send(proto string, port int) error {
	c, err := net.Dial(proto, fmt.Sprintf("10.9.0.1:%d", port))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("?"))
	return err
}

// tcpFlow leaves an established TCP connection to port open until the test ends.
func tcpFlow(t *testing.T, port int) error {
	l, err := net.Listen("tcp", fmt.Sprintf("10.9.0.1:%d", port))
	if err != nil {
		return err
	}
	t.Cleanup(func() { l.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return err
	}
	t.Cleanup(func() { c.Close() })
	return nil
}

func tracked(table, proto, port string) bool {
	for _, l := range strings.Split(table, "\n") {
		if strings.Contains(l, " "+proto+" ") && strings.Contains(l, "dport="+port+" ") {
			return true
		}
	}
	return false
}
