package link

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestRetryDump feeds RetryDump a fake dump that answers from a script: an
// interrupted read is repeated after a pause, up to dumpAttempts reads in
// all; anything else ends the loop at once.
func TestRetryDump(t *testing.T) {
	intr := netlink.ErrDumpInterrupted
	for _, tc := range []struct {
		name      string
		script    []error // the error of each read in turn
		wantReads int
		wantErr   error // nil: the last read's value comes back without error
	}{
		{"clean", []error{nil}, 1, nil},
		{"interrupted twice", []error{intr, intr, nil}, 3, nil},
		{"other error", []error{syscall.EBUSY}, 1, syscall.EBUSY},
		{"interrupted then other error", []error{intr, syscall.EBUSY}, 2, syscall.EBUSY},
		{"always interrupted", []error{intr, intr, intr, intr, intr, nil}, dumpAttempts, intr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := 0
			start := time.Now()
			v, err := RetryDump(func() (int, error) {
				reads++
				return reads, tc.script[reads-1]
			})
			took := time.Since(start)
			if reads != tc.wantReads || v != tc.wantReads {
				t.Errorf("%d reads, value of read %d; want %d", reads, v, tc.wantReads)
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("error %v; want %v", err, tc.wantErr)
			}
			if pauses := time.Duration(reads-1) * dumpPause; took < pauses {
				t.Errorf("%d reads in %v: no pause between them (want %v at least)", reads, took, pauses)
			}
		})
	}
}
