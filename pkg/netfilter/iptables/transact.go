package iptables

import (
	"context"
	"errors"
	"fmt"

	"github.com/cnisuite/cni/pkg/family"
	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
	"github.com/cnisuite/cni/pkg/netns"
)

// MaxAttempts bounds Transact's rounds: each lost one to a concurrent writer.
const MaxAttempts = 6

// RestoreError is a failed restore of one table, with the line
// iptables-restore rejected ("" when it named none).
type RestoreError struct {
	Line string
	Err  error
}

func (e *RestoreError) Error() string {
	if e.Line != "" {
		return fmt.Sprintf("%v (at %q)", e.Err, e.Line)
	}
	return e.Err.Error()
}

func (e *RestoreError) Unwrap() error { return e.Err }

// Final tells whether another attempt cannot help: iptables is missing, or
// the xtables lock was already waited for.
func Final(err error) bool {
	return errors.Is(err, ErrNotInstalled) || errors.Is(err, ErrXtablesLock)
}

// RestoreTable is Restore of lines into one table; a failure that is not
// Final is a *RestoreError naming the line iptables-restore rejected.
func RestoreTable(ctx context.Context, run Runner, f family.Family, table string, lines []string) error {
	err := Restore(ctx, run, f, map[string][]string{table: lines})
	if err == nil || Final(err) {
		return err
	}
	return &RestoreError{Err: err, Line: FailedLine(err, lines)}
}

// Transact reads table, has build plan its lines from what it read, and
// restores them, starting over when the restore fails, which is what a
// concurrent writer causes; what names the rules in the error of the last
// attempt. Nothing planned writes nothing.
func Transact(ctx context.Context, run Runner, f family.Family, table, what string, build func(*Table) []string) error {
	var err error
	for attempt := range MaxAttempts {
		if attempt > 0 {
			nftconn.Backoff(attempt)
		}
		ts, rerr := Save(ctx, run, f, table)
		if rerr != nil {
			return rerr
		}
		lines := build(ts.Get(table))
		if len(lines) == 0 {
			return nil
		}
		if err = RestoreTable(ctx, run, f, table, lines); err == nil || Final(err) {
			return err
		}
	}
	return fmt.Errorf("%s not applied after %d attempts: %w", what, MaxAttempts, err)
}

// EachFamily runs fn for both families at once, in the caller's network
// namespace (netns.Concurrently), and joins the errors.
func EachFamily(fn func(family.Family) error) error {
	fams := family.All()
	return netns.Concurrently(func() error { return fn(fams[0]) }, func() error { return fn(fams[1]) })
}
