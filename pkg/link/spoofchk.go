package link

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
)

// SpoofCheck drops frames that enter the bridge from a container's veth with
// a source MAC other than the container's. It uses the same nftables objects
// as the reference plugin (table bridge nat, chain PREROUTING at priority
// -300, chains cni-br-iface-<id>[-mac], comment macspoofchk-<id>), so either
// implementation removes what the other set up.
type SpoofCheck struct {
	ID     string // containerID-ifname
	HostIf string // host side of the veth
	MAC    string // the container's MAC
}

// nftName is what the nft text syntax accepts unquoted as a chain name,
// compiled on first use: a package-level compile would cost every plugin
// process that links this package, spoof check or not, at its start.
var nftName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_.-]+$`) })

func (s SpoofCheck) chain() string { return "cni-br-iface-" + s.ID }
func (s SpoofCheck) tag() string   { return `comment "macspoofchk-` + s.ID + `"` }

// Setup installs the rules in one nft transaction.
func (s SpoofCheck) Setup(ctx context.Context) error {
	if !nftName().MatchString(s.ID) {
		return fmt.Errorf("macspoofchk: attachment id %q must consist of letters, digits, '_', '.' and '-'", s.ID)
	}
	c, tag := s.chain(), s.tag()
	script := strings.Join([]string{
		"add table bridge nat",
		"add chain bridge nat PREROUTING { type filter hook prerouting priority -300 ; policy accept ; }",
		"add chain bridge nat " + c,
		"add chain bridge nat " + c + "-mac",
		"flush chain bridge nat " + c,
		"flush chain bridge nat " + c + "-mac",
		fmt.Sprintf("add rule bridge nat PREROUTING iifname %q jump %s %s", s.HostIf, c, tag),
		fmt.Sprintf("add rule bridge nat %s jump %s-mac %s", c, c, tag),
		fmt.Sprintf("add rule bridge nat %s-mac ether saddr %s return %s", c, s.MAC, tag),
		fmt.Sprintf("add rule bridge nat %s-mac drop %s", c, tag),
	}, "\n")
	return nft(ctx, script+"\n")
}

// Teardown removes the attachment's rules and chains; absent ones are fine,
// so it works after the veth (and its name) is gone.
func (s SpoofCheck) Teardown(ctx context.Context) error {
	if !nftName().MatchString(s.ID) {
		return nil // Setup refuses such ids, so nothing can exist
	}
	out, err := exec.CommandContext(ctx, "nft", "-a", "list", "table", "bridge", "nat").CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("No such file or directory")) || isNotInstalled(err) {
			return nil
		}
		return fmt.Errorf("macspoofchk: listing nftables table bridge nat: %w: %s", err, bytes.TrimSpace(out))
	}
	script := s.teardownScript(string(out))
	if script == "" {
		return nil
	}
	return nft(ctx, script)
}

// teardownScript turns a listing of table bridge nat into the deletions of
// this attachment's objects.
func (s SpoofCheck) teardownScript(listing string) string {
	var b strings.Builder
	chains := map[string]bool{}
	current := ""
	sc := bufio.NewScanner(strings.NewReader(listing))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "chain "); ok {
			current, _, _ = strings.Cut(name, " ")
			chains[current] = true
			continue
		}
		_, handle, ok := strings.Cut(line, "# handle ")
		if current == "PREROUTING" && ok && strings.Contains(line, s.tag()) {
			fmt.Fprintf(&b, "delete rule bridge nat PREROUTING handle %s\n", handle)
		}
	}
	// Flush both before deleting: a chain that is jumped to cannot go first.
	for _, op := range []string{"flush", "delete"} {
		for _, c := range []string{s.chain(), s.chain() + "-mac"} {
			if chains[c] {
				fmt.Fprintf(&b, "%s chain bridge nat %s\n", op, c)
			}
		}
	}
	return b.String()
}

func nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func isNotInstalled(err error) bool {
	var ee *exec.Error
	return errors.As(err, &ee)
}
