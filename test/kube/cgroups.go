package kubetest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupMounts lists the mount points of the machine's cgroup hierarchies
// (every v1 controller, named ones, and the unified one of a hybrid setup):
// runc and kubelet make a pod's cgroup in each.
func cgroupMounts() ([]string, error) {
	all, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mounts []string
	for _, m := range all {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			mounts = append(mounts, m.point)
		}
	}
	if len(mounts) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted")
	}
	return mounts, nil
}

// makeCgroups makes root (a path like /cnisuite-x) in every hierarchy. A
// new cpuset cgroup has no CPU and no memory node: it gets the root's, or no
// process could join it or its children.
func makeCgroups(root string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		dir := filepath.Join(m, root)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("making cgroup %s: %w", dir, err)
		}
		for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(m, file))
			if errors.Is(err, fs.ErrNotExist) {
				break // not the cpuset hierarchy
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, file), v, 0o644)
			}
			if err != nil {
				return fmt.Errorf("copying %s to cgroup %s: %w", file, dir, err)
			}
		}
	}
	return nil
}

// cgroupPids lists the processes in root and below, in every hierarchy.
func cgroupPids(root string) ([]int, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	for _, m := range mounts {
		err := filepath.WalkDir(filepath.Join(m, root), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return ignoreNotExist(err)
			}
			b, err := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return ignoreNotExist(err)
		})
		if err != nil {
			return nil, err
		}
	}
	var pids []int
	for pid := range seen {
		pids = append(pids, pid)
	}
	return pids, nil
}

// removeCgroups removes root and every cgroup below it, deepest first, in
// every hierarchy. The kernel refuses while a cgroup still counts a process
// that has just been killed: it retries for a few seconds.
func removeCgroups(root string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(m, root), func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			errs = append(errs, rmdirRetry(dirs[i]))
		}
	}
	return errors.Join(errs...)
}

func rmdirRetry(dir string) error {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
	}
}

// pidsInMountNS lists the processes in the mount namespace mnt (as
// /proc/PID/ns/mnt reads), but for except.
func pidsInMountNS(mnt string, except int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == except {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns == mnt {
			pids = append(pids, pid)
		}
	}
	return pids
}

func killPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
