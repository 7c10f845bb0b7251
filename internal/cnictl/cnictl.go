// Package cnictl is the operator's command for the suite's state on a node.
// Main dispatches to subcommands ("cnictl ipam ls"); each subcommand is a
// function over an env, so tests run them without a process. It judges
// leases and audits the overlay with the packages subnetd runs (pkg/subnet,
// pkg/overlay), so that it finds what subnetd would do; it imports no
// binary's package (cmd/, plugins/, internal/subnetd). It compares no backend
// type: what a backend programs and whether it has vxlan devices the overlay
// says (Settings.Audit, Settings.UsesVTEP).
package cnictl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	buildversion "github.com/cnisuite/cni/internal/version"
)

// env is what a subcommand may touch besides the node's files.
type env struct {
	stdout, stderr io.Writer
	now            func() time.Time
	// kubeDial, when set, opens the connections to the Kubernetes API:
	// tests reach an API server that listens in a network namespace.
	kubeDial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// command is a node of the command tree: either it has subcommands or it runs.
type command struct {
	name    string
	usage   string // arguments, for the help text
	summary string
	subs    []*command
	run     func(e *env, args []string) error
}

// root is the whole tree; later subcommands (doctor, leases, ...) hang here.
func root() *command {
	return &command{name: "cnictl", summary: "inspect and repair the CNI suite's state on this node", subs: []*command{
		ipamCommand(),
		doctorCommand(),
		leasesCommand(),
		resetCommand(),
		installCommand(),
		versionCommand(),
		execCommand("add"), execCommand("check"), execCommand("del"), execCommand("gc"),
	}}
}

// usageError is a command line that cannot be run: exit code 2 and the help.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// exitError is a command that ran and printed its answer but whose answer
// is an exit code (doctor's worst finding): nothing more to print.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func newFlagSet(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("cnictl "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// Main runs one command line (without the program name) and returns the exit
// code: 0 done, 1 failed, 2 bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	return mainIn(&env{stdout: stdout, stderr: stderr, now: time.Now}, args)
}

func mainIn(e *env, args []string) int {
	stderr := e.stderr
	err := dispatch(e, root(), []string{"cnictl"}, args)
	var ue *usageError
	var xe *exitError
	switch {
	case errors.As(err, &xe):
		return xe.code
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, ue.msg)
		return 2
	}
	fmt.Fprintf(stderr, "cnictl: %v\n", err)
	return 1
}

// dispatch walks down the tree by the leading words of args.
func dispatch(e *env, c *command, path, args []string) error {
	if c.run != nil {
		return c.run(e, args)
	}
	if len(args) == 0 {
		help(e.stderr, c, path)
		return usagef("%s: missing command", strings.Join(path, " "))
	}
	if isHelp(args[0]) {
		help(e.stdout, c, path) // asked for: the answer, not a complaint
		return flag.ErrHelp
	}
	for _, s := range c.subs {
		if s.name == args[0] {
			return dispatch(e, s, append(path, s.name), args[1:])
		}
	}
	help(e.stderr, c, path)
	return usagef("%s: unknown command %q", strings.Join(path, " "), args[0])
}

func isHelp(s string) bool { return s == "help" || s == "-h" || s == "--help" || s == "-help" }

// help lists every command under c, down to those that run.
func help(w io.Writer, c *command, path []string) {
	fmt.Fprintf(w, "%s: %s\n\nCommands:\n", strings.Join(path, " "), c.summary)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	var walk func(c *command, path []string)
	walk = func(c *command, path []string) {
		for _, s := range c.subs {
			p := append(slices.Clone(path), s.name)
			if s.run == nil {
				walk(s, p)
				continue
			}
			fmt.Fprintf(tw, "  %s\t%s\n", strings.Join(append(p, s.usage), " "), s.summary)
		}
	}
	walk(c, path)
	tw.Flush()
}

// parseFlags parses fs from args, flags and operands in any order (operators
// type "cnictl ipam gc cbr0 --dry-run"), and returns the operands.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return operands, nil
		}
		operands = append(operands, args[0])
		args = args[1:]
	}
}

func versionCommand() *command {
	return &command{name: "version", summary: "print cnictl's version and commit", run: func(e *env, args []string) error {
		if len(args) > 0 {
			return usagef("version takes no arguments")
		}
		_, err := fmt.Fprintln(e.stdout, "cnictl", buildversion.Get())
		return err
	}}
}
