package subnetd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// etcdServerName is the binary of the embedded etcd (cmd/subnetd-etcd),
// installed next to subnetd. Linking the etcd server into subnetd itself
// would cost every node about 8 MB of resident memory, also the many that
// use an external etcd.
const etcdServerName = "subnetd-etcd"

// errEmbeddedExited ends subnetd when its embedded etcd dies, so that the
// service manager restarts both.
var errEmbeddedExited = errors.New("the embedded etcd exited")

// etcdChild is the embedded etcd running as a child process. It stops when
// its stdin is closed: by stop, or by the kernel when subnetd dies.
type etcdChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{} // closed once the child has exited
	err   error         // its exit status, set before done is closed
}

// etcdServerBinary finds subnetd-etcd next to this executable, else in PATH.
func etcdServerBinary() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), etcdServerName)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(etcdServerName); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("without --etcd-endpoints subnetd runs its embedded etcd, %s, which is neither next to subnetd nor in PATH: install it with subnetd (make install), or pass --etcd-endpoints", etcdServerName)
}

// startEmbedded runs subnetd-etcd with its data in dir and returns once it
// serves clients at clientAddr, or fails after timeout.
func startEmbedded(dir, clientAddr, peerAddr string, timeout time.Duration, log *slog.Logger) (*etcdChild, error) {
	bin, err := etcdServerBinary()
	if err != nil {
		return nil, err
	}
	if err := checkFree(clientAddr); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--data-dir", dir, "--client-url", "http://"+clientAddr, "--peer-url", "http://"+peerAddr,
		"--start-timeout", timeout.String())
	cmd.Stderr = os.Stderr // its log lines join subnetd's
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// A pipe of our own, not StdoutPipe: Wait runs concurrently with the
	// read of the ready line, which StdoutPipe forbids.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("starting the embedded etcd %s: %w", bin, err)
	}
	c := &etcdChild{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := c.waitReady(r, timeout); err != nil {
		c.stop(stopGrace, log)
		return nil, fmt.Errorf("embedded etcd (%s, data in %s): %w", bin, dir, err)
	}
	return c, nil
}

// checkFree fails, saying what to do, when something already listens at
// the embedded etcd's client address: most likely an etcd that flanneld
// used there by default (without --etcd-endpoints it connects to
// http://127.0.0.1:2379, where subnetd runs its own instead).
func checkFree(clientAddr string) error {
	l, err := net.Listen("tcp", clientAddr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("without --etcd-endpoints subnetd runs its embedded etcd at %s, where something already listens: if that is the cluster's etcd (flanneld's default endpoint), pass --etcd-endpoints=http://%s; else free the port or move the embedded etcd with --embedded-etcd-client", clientAddr, clientAddr)
	}
	if err != nil {
		return nil // the child reports it, with its own words
	}
	return l.Close()
}

// waitReady waits for the child's "ready" line.
func (c *etcdChild) waitReady(stdout io.Reader, timeout time.Duration) error {
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	}()
	select {
	case ok := <-ready:
		if ok {
			return nil
		}
		<-c.done
		return fmt.Errorf("exited before serving (%v); its error is logged above", c.err)
	case <-time.After(timeout):
		return fmt.Errorf("not serving after %v", timeout)
	}
}

// stopGrace is how long the embedded etcd may take to close cleanly.
const stopGrace = 15 * time.Second

// stop ends the child cleanly, killing it if it has not exited after grace.
func (c *etcdChild) stop(grace time.Duration, log *slog.Logger) {
	_ = c.stdin.Close()
	select {
	case <-c.done:
		log.Info("the embedded etcd stopped", "pid", c.cmd.Process.Pid, "exit", c.cmd.ProcessState)
		return
	case <-time.After(grace):
	}
	log.Error("the embedded etcd did not stop in time; killing it", "pid", c.cmd.Process.Pid, "waited", grace)
	_ = c.cmd.Process.Kill()
	<-c.done
}
