// Package iptablestest holds the iptables doubles that the tests of the
// packages under pkg/netfilter share: a Runner serving canned iptables-save
// output, one without iptables, one that runs the real binaries in a test
// namespace, and a ruleset dump to compare. Only tests import it; besides
// the standard library it imports iptables and test/netns only.
package iptablestest

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/cnisuite/cni/pkg/netfilter/iptables"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// Fake serves canned iptables-save output and records restores; Fail, when
// set, decides which restore payloads the "kernel" rejects, and with which
// message. The two families may run it at once.
type Fake struct {
	mu       sync.Mutex
	Saved    map[string]string // by binary: iptables-save, ip6tables-save
	Saves    []string          // the binaries run
	Restores []string          // "<binary>\n<payload>"
	Fail     func(bin, payload string) string
}

// Run implements iptables.Runner.
func (f *Fake) Run(_ context.Context, stdin, name string, _ ...string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if strings.HasSuffix(name, "-save") {
		f.Saves = append(f.Saves, name)
		return f.Saved[name], nil
	}
	f.Restores = append(f.Restores, name+"\n"+stdin)
	if f.Fail != nil {
		if msg := f.Fail(name, stdin); msg != "" {
			return "", errors.New(msg)
		}
	}
	return "", nil
}

// Restored returns the payloads sent to one binary, in order.
func (f *Fake) Restored(bin string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.Restores {
		if b, payload, _ := strings.Cut(r, "\n"); b == bin {
			out = append(out, payload)
		}
	}
	return out
}

// Payload is every payload sent to bin, joined.
func (f *Fake) Payload(bin string) string { return strings.Join(f.Restored(bin), "") }

// NotInstalled is a machine without the iptables binaries.
type NotInstalled struct{}

// Run implements iptables.Runner.
func (NotInstalled) Run(_ context.Context, _, name string, _ ...string) (string, error) {
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

// Netns runs the iptables binaries inside a test namespace.
type Netns struct{ Name string }

// Run implements iptables.Runner.
func (r Netns) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	return iptables.Exec{}.Run(ctx, stdin, "ip", append([]string{"netns", "exec", r.Name, name}, args...)...)
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// Ruleset is what save (iptables-save or ip6tables-save) prints in ns,
// without comments and counters, to compare.
func Ruleset(t *testing.T, ns *netnstest.NS, save string) string {
	t.Helper()
	var b strings.Builder
	for line := range strings.Lines(ns.Run(t, save)) {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(counters.ReplaceAllString(line, ""))
		}
	}
	return b.String()
}
