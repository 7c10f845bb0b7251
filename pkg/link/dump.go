package link

import (
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// dumpAttempts bounds the reads of a netlink dump that the kernel keeps
// reporting as interrupted; dumpPause between them lets the change that
// interrupted one (a pod's ADD or DEL, a peer programmed) finish.
const (
	dumpAttempts = 5
	dumpPause    = 5 * time.Millisecond
)

// RetryDump calls dump again while its result is marked interrupted: since
// netlink v1.3 a dump that raced with a change of the table it reads returns
// partial data and netlink.ErrDumpInterrupted. After dumpAttempts
// interrupted reads the error says so and still wraps ErrDumpInterrupted;
// any other error is returned unchanged, at once. dump may read through
// any socket (the library's default, a netlink.Handle, a raw dump).
func RetryDump[T any](dump func() (T, error)) (T, error) {
	v, err := dump()
	for range dumpAttempts - 1 {
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
		time.Sleep(dumpPause)
		v, err = dump()
	}
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		return v, fmt.Errorf("netlink dump interrupted by concurrent changes %d times in a row: %w", dumpAttempts, err)
	}
	return v, err
}
