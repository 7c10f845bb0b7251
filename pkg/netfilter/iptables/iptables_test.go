package iptables

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netconf"
)

// lockMsg is what legacy iptables-restore prints when it gives up on the lock.
const lockMsg = "iptables-restore: exit status 4: Another app is currently holding the xtables lock. Stopped waiting after 10s."

// failing fails every command with msg.
type failing string

func (f failing) Run(context.Context, string, string, ...string) (string, error) {
	return "", errors.New(string(f))
}

// A held xtables lock is "try again later" (code 11), and no other
// failure is.
func TestXtablesLockIsTryAgain(t *testing.T) {
	lines := map[string][]string{"nat": {"-N X"}}
	err := Restore(context.Background(), failing(lockMsg), family.IPv4, lines)
	var ce *netconf.Error
	if !errors.Is(err, ErrXtablesLock) || !errors.As(err, &ce) || ce.Code != netconf.CodeTryAgainLater {
		t.Fatalf("error %v, want ErrXtablesLock with code %d", err, netconf.CodeTryAgainLater)
	}
	err = Restore(context.Background(), failing("iptables-restore: exit status 1: line 3 failed"), family.IPv4, lines)
	if err == nil || errors.Is(err, ErrXtablesLock) {
		t.Errorf("another restore failure: %v, want an error that is not the lock's", err)
	}
}

// FuzzQuoteTokenize: what Quote writes, the iptables-save parser reads back.
func FuzzQuoteTokenize(f *testing.F) {
	f.Add(`name: "net" id: "c1"`)
	f.Add(`a\b "q" \\`)
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsAny(s, "\n\r") {
			return // iptables-save is line-based; comments cannot hold newlines
		}
		toks := Tokenize("-A X -m comment --comment " + Quote(s) + " -j ACCEPT")
		if len(toks) != 8 || toks[5] != s {
			t.Fatalf("round trip of %q gave %q", s, toks)
		}
	})
}
