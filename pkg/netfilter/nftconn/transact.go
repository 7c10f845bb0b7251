package nftconn

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"golang.org/x/sys/unix"
)

// maxAttempts bounds the read-plan-commit loop that concurrent writers can
// make fail.
const maxAttempts = 6

// Transact runs build on a fresh connection and commits what it queued
// when it reports a change; a commit that fails (a rule deleted or
// rewritten meanwhile) starts over, up to maxAttempts times.
func Transact(build func(*Conn) (changed bool, err error)) error {
	var err error
	for attempt := range maxAttempts {
		if attempt > 0 {
			Backoff(attempt)
		}
		conn, dialErr := Dial()
		if dialErr != nil {
			return dialErr
		}
		var changed bool
		changed, err = build(conn)
		if err == nil && changed {
			err = conn.Flush()
		}
		conn.Close()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("nftables transaction failed %d times: %w", maxAttempts, err)
}

// Backoff waits before attempt n+1 of a transaction that lost a race: a
// few random milliseconds, growing with n, so that the writers that
// collided do not collide again.
func Backoff(n int) {
	time.Sleep(time.Duration(n+1) * time.Duration(1+rand.IntN(4)) * time.Millisecond)
}

// Absent tells whether err says the kernel has no nftables (the subsystem
// or netfilter's netlink family missing), as on a node that runs
// iptables-legacy on a kernel without nf_tables: such a node has no rule
// to remove.
func Absent(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPROTONOSUPPORT)
}
