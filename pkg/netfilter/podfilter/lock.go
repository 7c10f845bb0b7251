package podfilter

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/netfilter/nftconn"
)

// planLock names the abstract unix socket whose binding is the lock of the
// iptables plans in a network namespace. Abstract names belong to the
// network namespace, as the tables do, and go with the process that
// holds them: no file is left, and a killed holder frees the lock.
const planLock = "@cnisuite-firewall-plans"

// planWait bounds the wait for the lock; past it the plan goes ahead
// unlocked (a hung holder must not hang the runtime).
const planWait = 10 * time.Second

// lockPlans serializes, within the caller's network namespace, the
// planned ADDs: read the table, plan, restore. iptables-nft replays a
// restore that lost a race on the table refreshed, where -N of a chain
// that now exists is skipped rather than failing, so two first ADDs of a
// node would each insert the jumps. The returned function releases it.
func lockPlans() (unlock func()) {
	deadline := time.Now().Add(planWait)
	for attempt := 0; ; attempt++ {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return func() {}
		}
		if err = unix.Bind(fd, &unix.SockaddrUnix{Name: planLock}); err == nil {
			return func() { unix.Close(fd) }
		}
		unix.Close(fd)
		if err != unix.EADDRINUSE || time.Now().After(deadline) {
			return func() {}
		}
		nftconn.Backoff(min(attempt, 8))
	}
}
