package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/netns"
)

// cnitoolVerbs are what the cnitool driver measures. CHECK, the memory pass
// and the concurrent phase stay with the libcni driver: the plugins do the
// same work under both, and the run stays short.
var cnitoolVerbs = []verb{verbAdd, verbDel}

// cnitoolConf is what cnitool needs to drive one side's conflist.
type cnitoolConf struct {
	bin     string // the cnitool binary (tools.cnitool)
	side    side
	conf    []byte // the conflist
	network string // its name, cnitool's second argument
	capArgs func(pod int) map[string]any
}

// cnitoolRun drives one side's conflist with cnitool, one process per verb,
// as an operator or a script does. cnitool reads its conflist from
// NETCONFPATH and the capability arguments from CAP_ARGS, names the
// container after the netns path (cnitoolID; it ignores CNI_CONTAINERID)
// and keeps its cache in /var/lib/cni, which it offers no way to change:
// it runs from a thread whose private mount namespace has a directory of
// the run as /var/lib (pinnedThread).
type cnitoolRun struct {
	cnitoolConf
	env    []string // PATH, CNI_PATH, NETCONFPATH, CNI_IFNAME
	varLib string
	node   *namespace
	pods   []*namespace
	thread *pinnedThread // set while the phase runs
}

// newCnitoolRun writes the conflist into dir/netconf and makes the
// directory cnitool sees as /var/lib.
func newCnitoolRun(c cnitoolConf, node *namespace, pods []*namespace, dir string) (*cnitoolRun, error) {
	confDir, varLib := filepath.Join(dir, "netconf"), filepath.Join(dir, "varlib")
	for _, d := range []string{confDir, varLib} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(confDir, c.network+".conflist"), c.conf, 0o644); err != nil {
		return nil, err
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "CNI_PATH=" + c.side.dir, "NETCONFPATH=" + confDir, "CNI_IFNAME=eth0"}
	return &cnitoolRun{cnitoolConf: c, env: env, varLib: varLib, node: node, pods: pods}, nil
}

// cnitoolID is the container ID cnitool gives the pod at netnsPath: it
// hashes the path.
func cnitoolID(netnsPath string) string {
	sum := sha512.Sum512([]byte(netnsPath))
	return fmt.Sprintf("cnitool-%x", sum[:10])
}

// do runs `cnitool add|check|del` for the pod and returns the child's wall
// time from its start to its exit.
func (c *cnitoolRun) do(ctx context.Context, v verb, pod int) (time.Duration, error) {
	env := c.env
	if c.capArgs != nil {
		raw, err := json.Marshal(c.capArgs(pod))
		if err != nil {
			return 0, err
		}
		env = append(slices.Clone(env), "CAP_ARGS="+string(raw))
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, strings.ToLower(v.String()), c.network, c.pods[pod].path)
	cmd.Env = env
	var took time.Duration
	var err error
	c.thread.run(func() { took, err = timed(cmd) })
	if err != nil {
		return took, fmt.Errorf("cnitool %s of pod %s: %w", strings.ToLower(v.String()), c.pods[pod].name, err)
	}
	return took, nil
}

// participant is the side in the cnitool driver's phase.
func (c *cnitoolRun) participant(name string) participant {
	return participant{name: name, verbs: cnitoolVerbs, do: c.do}
}

// cnitoolPhase runs the cnitool driver: on each side a warm-up pod, then
// ADD of every pod and DEL of every pod, alternating the sides pod by pod.
func cnitoolPhase(ctx context.Context, runs [2]*sideRun, pods int) ([2]map[verb][]float64, error) {
	var parts []participant
	for _, r := range runs {
		t, err := startPinnedThread(r.node.path, r.tool.varLib)
		if err != nil {
			return [2]map[verb][]float64{}, fmt.Errorf("%s: %w", r.side.name, err)
		}
		defer t.close()
		r.tool.thread = t
		p := r.tool.participant(r.side.name)
		p.do = r.hooked(p.do)
		if err := p.warmUp(ctx); err != nil {
			return [2]map[verb][]float64{}, err
		}
		parts = append(parts, p)
	}
	ms, err := sequential(ctx, parts, pods, cnitoolVerbs)
	return [2]map[verb][]float64{ms[0], ms[1]}, err
}

// pinnedThread is a goroutine locked to an OS thread that left the bench's
// mount namespace for a private one, where a directory of the run is
// /var/lib, and entered a node's network namespace: the programs it starts
// inherit both, with no wrapper process between the bench and them. The
// thread is never unlocked, so no other goroutine runs in those namespaces;
// the runtime ends it with the goroutine (close).
type pinnedThread struct{ jobs chan func() }

func startPinnedThread(nodePath, varLib string) (*pinnedThread, error) {
	t := &pinnedThread{jobs: make(chan func())}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread()
		err := enterPrivate(nodePath, varLib)
		ready <- err
		if err != nil {
			return
		}
		for fn := range t.jobs {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

// enterPrivate moves the calling thread into a new mount namespace with
// varLib bound on /var/lib, and into the network namespace at nodePath.
func enterPrivate(nodePath, varLib string) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("a private mount namespace: %w", err)
	}
	// Private before anything is mounted: under a shared / the bind mount
	// would show in the machine's own mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making the mounts private: %w", err)
	}
	if err := unix.Mount(varLib, "/var/lib", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s on /var/lib: %w", varLib, err)
	}
	node, err := netns.Open(nodePath)
	if err != nil {
		return err
	}
	defer node.Close()
	if err := unix.Setns(int(node.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering %s: %w", nodePath, err)
	}
	return nil
}

// run runs fn on the thread and waits for it.
func (t *pinnedThread) run(fn func()) {
	done := make(chan struct{})
	t.jobs <- func() { fn(); close(done) }
	<-done
}

// close ends the goroutine, and so the thread.
func (t *pinnedThread) close() { close(t.jobs) }
