package nat

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/cnisuite/cni/pkg/netconf"
)

// lockMsg is what legacy iptables-restore prints when it gives up on the lock.
const lockMsg = "iptables-restore: exit status 4: Another app is currently holding the xtables lock. Stopped waiting after 10s."

// wantTryAgain checks that err is the lock's code 11.
func wantTryAgain(t *testing.T, err error) {
	t.Helper()
	var ce *netconf.Error
	if !errors.Is(err, ErrXtablesLock) || !errors.As(err, &ce) || ce.Code != netconf.CodeTryAgainLater {
		t.Fatalf("error %v, want ErrXtablesLock with code %d", err, netconf.CodeTryAgainLater)
	}
}

// A held xtables lock is "try again later" for masquerade and port
// mappings alike, and port mappings do not wait for it once per retry.
func TestXtablesLockIsTryAgain(t *testing.T) {
	addrs := []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24")}
	f := &hpFake{fail: func(string, string) string { return lockMsg }}
	wantTryAgain(t, Masq{Run: f}.Setup(context.Background(), "net", "c1", addrs))

	f = &hpFake{fail: func(string, string) string { return lockMsg }}
	wantTryAgain(t, HostPorts{Run: f, Quick: noQuick}.Add(context.Background(), testConf(), addrs))
	if n := len(f.restored("iptables-restore")); n != 1 {
		t.Errorf("%d restores with the lock held, want 1 (each waits 10 s)", n)
	}

	f = &hpFake{fail: func(string, string) string { return "iptables-restore: exit status 1: line 3 failed" }}
	if err := (Masq{Run: f}).Setup(context.Background(), "net", "c1", addrs); err == nil || errors.Is(err, ErrXtablesLock) {
		t.Errorf("another restore failure: %v, want an error that is not the lock's", err)
	}
}
