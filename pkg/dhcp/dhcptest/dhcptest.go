// Package dhcptest runs what the dhcp plugin works with, for tests: Debian's
// dnsmasq as the DHCP server in a namespace, and the plugin's daemon in
// another. Only tests link it; it imports pkg/dhcp's binary by path, never a
// plugin package.
package dhcptest

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cnisuite/cni/internal/proc"
	"github.com/cnisuite/cni/internal/testutil"
	netnstest "github.com/cnisuite/cni/test/netns"
)

const (
	// ServerIP is the server's address on its interface (a /24), and the
	// router it offers.
	ServerIP = "10.77.0.1"
	// LeaseSecs is dnsmasq's shortest lease; T1 and T2 are set short.
	LeaseSecs = 120
	// RenewSecs is T1, when clients renew; T2 is twice it.
	RenewSecs = 3
	dnsmasq   = "/usr/sbin/dnsmasq"
)

// Skip skips t unless it runs as root on a machine with dnsmasq.
func Skip(t testing.TB) {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	if _, err := os.Stat(dnsmasq); err != nil {
		t.Skip("needs dnsmasq (Debian's dnsmasq-base)")
	}
}

// Lab is one test's server and daemon, with their files in Dir and their
// stderr in Logs; both are stopped when the test ends.
type Lab struct {
	t              testing.TB
	Dir            string
	Logs           *testutil.SyncBuffer
	Server, Daemon *exec.Cmd
}

// New is a lab with its files in dir.
func New(t testing.TB, dir string) *Lab {
	return &Lab{t: t, Dir: dir, Logs: &testutil.SyncBuffer{}}
}

// Socket is the daemon's socket, for ipam.daemonSocketPath.
func (l *Lab) Socket() string { return filepath.Join(l.Dir, "dhcp.sock") }

// LeaseFile is dnsmasq's lease file.
func (l *Lab) LeaseFile() string { return filepath.Join(l.Dir, "dnsmasq.leases") }

// StartServer runs dnsmasq in ns on iface, which must hold ServerIP/24:
// leases of LeaseSecs from 10.77.0.100-150, renewals asked every RenewSecs.
func (l *Lab) StartServer(ns *netnstest.NS, iface string) {
	l.t.Helper()
	l.Server = exec.Command("ip", "netns", "exec", ns.Name, dnsmasq, "--no-daemon", "--conf-file=/dev/null",
		"--user=root", "--port=0", "--interface="+iface, "--bind-interfaces", "--no-ping", "--dhcp-authoritative",
		"--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,"+strconv.Itoa(LeaseSecs),
		"--dhcp-option=option:router,"+ServerIP,
		"--dhcp-option=option:T1,"+strconv.Itoa(RenewSecs), "--dhcp-option=option:T2,"+strconv.Itoa(2*RenewSecs),
		"--dhcp-leasefile="+l.LeaseFile(), "--pid-file="+filepath.Join(l.Dir, "dnsmasq.pid"))
	l.start(l.Server, "started, version")
}

// StartDaemon runs `dhcp daemon` in ns on Socket and waits until it serves;
// flags come after the tests' defaults.
func (l *Lab) StartDaemon(ns *netnstest.NS, flags ...string) {
	l.t.Helper()
	bin := testutil.Plugins(l.t, "plugins/ipam/dhcp")
	args := []string{"netns", "exec", ns.Name, bin + "/dhcp", "daemon", "-socketpath", l.Socket(),
		"-statedir", filepath.Join(l.Dir, "state"), "-timeout", "1s", "-resendtimeout", "15s", "-loglevel", "debug"}
	l.Daemon = exec.Command("ip", append(args, flags...)...)
	l.start(l.Daemon, "serving")
}

// StartReferenceDaemon runs the reference plugins' dhcp binary bin as its
// daemon in ns on Socket, with the tests' timeouts, and waits until it
// accepts: it logs nothing before its first request.
func (l *Lab) StartReferenceDaemon(ns *netnstest.NS, bin string) {
	l.t.Helper()
	l.Daemon = exec.Command("ip", "netns", "exec", ns.Name, bin, "daemon", "-socketpath", l.Socket(), "-timeout", "1s", "-resendtimeout", "15s")
	l.start(l.Daemon, "")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", l.Socket()); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("the reference daemon does not accept on %s:\n%s", l.Socket(), l.Logs.String())
		}
	}
}

// StopDaemon ends the daemon as systemd would.
func (l *Lab) StopDaemon() { proc.Stop(l.Daemon, 5*time.Second) }

// start runs cmd, ended with the test, and returns once its stderr shows
// ready (at once for ""); what it writes there goes on into Logs.
func (l *Lab) start(cmd *exec.Cmd, ready string) {
	l.t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { proc.Stop(cmd, 5*time.Second) })
	up := make(chan struct{})
	if ready == "" {
		close(up)
	}
	go func() {
		var once sync.Once
		for sc := bufio.NewScanner(stderr); sc.Scan(); {
			_, _ = l.Logs.Write([]byte(sc.Text() + "\n"))
			if ready != "" && strings.Contains(sc.Text(), ready) {
				once.Do(func() { close(up) })
			}
		}
	}()
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		l.t.Fatalf("%s did not start:\n%s", cmd.Args, l.Logs.String())
	}
}

// Leases returns dnsmasq's lease file: expiry time by address.
func (l *Lab) Leases() map[string]string {
	l.t.Helper()
	b, err := os.ReadFile(l.LeaseFile())
	if err != nil && !os.IsNotExist(err) {
		l.t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 3 {
			out[f[2]] = f[0]
		}
	}
	return out
}

// WaitLeases waits until dnsmasq's lease file satisfies ok: dnsmasq
// rewrites it on every change, and this reads it ten times a second.
func (l *Lab) WaitLeases(what string, within time.Duration, ok func(map[string]string) bool) map[string]string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		got := l.Leases()
		if ok(got) {
			return got
		}
		select {
		case <-ctx.Done():
			l.t.Fatalf("%s: not within %s; leases %v; daemon log:\n%s", what, within, got, l.Logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
