// Package proc ends the daemons that tests and the bench start.
//
// It imports nothing of the suite, so any test or the bench can use it.
package proc

import (
	"os/exec"
	"syscall"
	"time"
)

// Stop ends a started process, once: SIGTERM, then SIGKILL if it has not
// exited within grace.
func Stop(cmd *exec.Cmd, grace time.Duration) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}
