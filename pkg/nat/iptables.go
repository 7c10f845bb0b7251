// Package nat installs and removes the masquerade rules of interface plugins.
// Each attachment owns one iptables chain in the nat table, named and
// commented like the reference plugins' (so a node can switch between the two
// and still clean up), and every change of one ADD, DEL or GC is committed in
// a single iptables-restore --noflush transaction per address family.
package nat

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"github.com/cnisuite/cni/pkg/netconf"
)

// Runner runs a command with stdin and returns its stdout. Tests fake it.
type Runner interface {
	Run(ctx context.Context, stdin string, name string, args ...string) (string, error)
}

// Exec runs the real binaries.
type Exec struct{}

// Run implements Runner; stderr is folded into the error. The command dies
// with the plugin: an iptables-restore left running after the runtime
// killed its plugin would commit the rules of an ADD after the runtime's DEL
// had removed them (TestKillSafety met that leak).
func (Exec) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The death signal follows the thread that forked, not the process:
	// kept on this thread until the command is done, so that the thread
	// cannot end under it (a locked goroutine's exit ends its thread).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(errOut.Bytes()))
	}
	return out.String(), nil
}

// ErrXtablesLock is wrapped by the error of a restore that gave up waiting
// for the xtables lock (legacy iptables takes it; iptables-nft does not).
var ErrXtablesLock = errors.New("another program holds the xtables lock (waited 10 s); try again")

// lockHeld returns the try-again-later error (code 11) of a restore that
// failed on the xtables lock, or nil when err is something else.
func lockHeld(err error) error {
	if err == nil || !strings.Contains(err.Error(), "xtables lock") {
		return nil
	}
	return netconf.Errorf(netconf.CodeTryAgainLater, "%w", fmt.Errorf("%w: %w", ErrXtablesLock, err))
}

// ErrNotInstalled says the iptables binaries are missing.
var ErrNotInstalled = errors.New("iptables is not installed; install it (Debian: apt-get install iptables) or disable ipMasq")

// HaveIPTables is the reference's test for the default backend of
// portmap and of bridge's ipMasq: iptables-restore in PATH. It runs
// nothing, as every plugin start pays for it.
func HaveIPTables() bool {
	_, err := exec.LookPath("iptables-restore")
	return err == nil
}

// ChainName is the reference plugins' chain of an attachment: "CNI-" and
// the first 24 hex digits of sha512(network+containerID), 28 characters.
func ChainName(network, containerID string) string {
	sum := sha512.Sum512([]byte(network + containerID))
	return "CNI-" + hex.EncodeToString(sum[:12])
}

// Comment tags every rule of an attachment, in the reference's format, so
// that GC can tell whose a chain is.
func Comment(network, containerID string) string {
	return fmt.Sprintf("name: %q id: %q", network, containerID)
}

// family is one of the two iptables stacks.
type family struct {
	v6        bool
	multicast string
}

var families = []family{{false, "224.0.0.0/4"}, {true, "ff00::/8"}}

func (f family) save() string {
	if f.v6 {
		return "ip6tables-save"
	}
	return "iptables-save"
}

func (f family) restore() string {
	if f.v6 {
		return "ip6tables-restore"
	}
	return "iptables-restore"
}

// Masq manages masquerade rules through iptables.
type Masq struct {
	Run Runner // nil: the real binaries
}

func (m Masq) runner() Runner {
	if m.Run == nil {
		return Exec{}
	}
	return m.Run
}

func (m Masq) read(ctx context.Context, f family) (*natTable, error) {
	out, err := m.runner().Run(ctx, "", f.save(), "-t", "nat")
	var ee *exec.Error
	if errors.As(err, &ee) {
		return nil, fmt.Errorf("%s: %w", f.save(), ErrNotInstalled)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the nat table: %w", err)
	}
	return parseSave(out), nil
}

func (m Masq) commit(ctx context.Context, f family, lines []string) error {
	payload := "*nat\n" + strings.Join(lines, "\n") + "\nCOMMIT\n"
	if _, err := m.runner().Run(ctx, payload, f.restore(), "--noflush", "-w", "10"); err != nil {
		if lerr := lockHeld(err); lerr != nil {
			return lerr
		}
		return fmt.Errorf("applying masquerade rules: %w", err)
	}
	return nil
}
