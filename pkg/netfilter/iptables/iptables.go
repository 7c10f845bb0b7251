// Package iptables runs iptables-save and iptables-restore --noflush for one
// address family, parses what iptables-save prints, and turns their failures
// into the suite's errors (not installed, the xtables lock held). It owns no
// rule: the packages beside it (hostport, masq, hostrules, podfilter, leftovers) decide
// what to write. Of pkg/netfilter it imports only nftconn (its backoff), and nothing
// under pkg/netfilter imports a plugin, the daemon, pkg/subnet or
// pkg/overlay.
package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/cnisuite/cni/pkg/family"
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

// orExec is run, or the real binaries when run is nil.
func orExec(run Runner) Runner {
	if run == nil {
		return Exec{}
	}
	return run
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

// notInstalled wraps ErrNotInstalled when err says bin could not be run.
func notInstalled(bin string, err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return fmt.Errorf("%s: %w", bin, ErrNotInstalled)
	}
	return nil
}

// HaveIPTables is the reference's test for the default backend of
// portmap and of bridge's ipMasq: iptables-restore in PATH. It runs
// nothing, as every plugin start pays for it.
func HaveIPTables() bool {
	_, err := exec.LookPath("iptables-restore")
	return err == nil
}

// Save runs iptables-save (ip6tables-save for IPv6) with run (nil: the real
// binary) for one table, or for every table when table is "", and parses
// what it prints. A missing binary is ErrNotInstalled.
func Save(ctx context.Context, run Runner, f family.Family, table string) (Tables, error) {
	bin, args, what := f.IPTables()+"-save", []string{}, "the rules with "+f.IPTables()+"-save"
	if table != "" {
		args, what = []string{"-t", table}, "the "+table+" table"
	}
	out, err := orExec(run).Run(ctx, "", bin, args...)
	if err != nil {
		if nerr := notInstalled(bin, err); nerr != nil {
			return nil, nerr
		}
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	return parseSave(out), nil
}

// restoreTables are the tables the suite writes, in the order a restore
// lists them.
var restoreTables = []string{"nat", "filter"}

// Restore commits lines (restore commands by table: nat, filter) with one
// iptables-restore --noflush of the family, run with run (nil: the real
// binary), so that they apply whole or not at all; nothing to write runs
// nothing. A missing binary is ErrNotInstalled and the xtables lock held
// is ErrXtablesLock with code 11; any other failure is the command's
// error, for the caller to name what it was applying.
func Restore(ctx context.Context, run Runner, f family.Family, lines map[string][]string) error {
	var payload strings.Builder
	for table := range lines {
		if !slices.Contains(restoreTables, table) {
			return fmt.Errorf("iptables-restore of table %q: the suite writes only %v", table, restoreTables)
		}
	}
	for _, table := range restoreTables {
		if len(lines[table]) > 0 {
			fmt.Fprintf(&payload, "*%s\n%s\nCOMMIT\n", table, strings.Join(lines[table], "\n"))
		}
	}
	if payload.Len() == 0 {
		return nil
	}
	bin := f.IPTables() + "-restore"
	_, err := orExec(run).Run(ctx, payload.String(), bin, "--noflush", "-w", "10")
	if nerr := notInstalled(bin, err); nerr != nil {
		return nerr
	}
	if lerr := lockHeld(err); lerr != nil {
		return lerr
	}
	return err
}

// FailedLine is the line of a restore of one table that
// iptables-restore's error names ("line N failed", counted from the table's "*" line),
// or "" when it names none.
func FailedLine(err error, lines []string) string {
	_, rest, ok := strings.Cut(err.Error(), "line ")
	if !ok {
		return ""
	}
	n := 0
	i := 0
	for ; i < len(rest) && rest[i] >= '0' && rest[i] <= '9'; i++ {
		n = n*10 + int(rest[i]-'0')
	}
	if i == 0 || n-2 < 0 || n-2 >= len(lines) {
		return ""
	}
	return lines[n-2]
}
