package kubetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// process is a control-plane component running inside a namespace, its
// output appended to a log file that outlives restarts.
type process struct {
	name string
	argv []string // the command and its flags, reused by a restart
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
	err  error         // how it exited, once done is closed
}

// spawner starts every component from one OS thread that never ends: the
// kernel sends a child its parent-death signal when the thread that forked
// it exits, and Go ends threads (those left locked to a goroutine that
// returned), which would kill a component in the middle of a test.
var spawner = sync.OnceValue(func() chan<- func() {
	ch := make(chan func())
	go func() {
		runtime.LockOSThread()
		for fn := range ch {
			fn()
		}
	}()
	return ch
})

// start runs the process inside ns (ip netns exec execs the command, so the
// pid is the component's). If the test binary dies, the kernel kills it.
func (p *process) start(ns *netnstest.NS) error {
	return p.startWith([]string{"ip", "netns", "exec", ns.Name}, ns.Name)
}

// startWith runs the process behind enter, a command that enters namespaces
// and execs the rest of its arguments (ip netns exec, nsenter), so that the
// pid is the component's; where names them in the log.
func (p *process) startWith(enter []string, where string) error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "==== %s: starting %s in %s\n", time.Now().Format(time.RFC3339Nano), p.name, where)
	argv := append(slices.Clone(enter), p.argv...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error)
	spawner() <- func() { started <- cmd.Start() }
	if err := <-started; err != nil {
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return nil
}

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// logTail returns the last n lines of the process's log.
func (p *process) logTail(n int) string { return fileTail(p.log, n) }

// fileTail returns the last n lines of a file.
func fileTail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// logTailsOnFailure prints the end of every log when the test has failed.
func logTailsOnFailure(t testing.TB, procs ...*process) {
	t.Helper()
	if !t.Failed() {
		return
	}
	for _, p := range procs {
		if p.argv != nil {
			t.Logf("==== %s, last 40 lines of %s:\n%s", p.name, p.log, p.logTail(40))
		}
	}
}
