package kubetest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// mount is one line of a mountinfo file: where, and what filesystem.
type mount struct {
	point, fstype string
}

// readMountinfo lists the mounts of a /proc/PID/mountinfo file, in its
// order: a later mount on the same point hides an earlier one.
func readMountinfo(file string) ([]mount, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		mounts = append(mounts, mount{point: fields[4], fstype: fields[sep+1]})
	}
	return mounts, sc.Err()
}

// privateDir mounts an empty tmpfs at dir in the node's mount namespace,
// without making or changing anything on the machine. When dir is missing,
// the top directory above it that the node has (/etc for /etc/cni/net.d,
// /opt for /opt/cni/bin) first gets an overlay of itself whose upper layer
// is in the node's private /run, so that making dir writes there, never to
// the machine's disk. An overlay would hide the mounts below its directory
// (a container's /etc/resolv.conf, say): it refuses such a directory.
func (n *Node) privateDir(t testing.TB, dir string) {
	t.Helper()
	top := dir
	for {
		if _, err := os.Stat(n.Path(top)); err == nil {
			break
		}
		top = filepath.Dir(top)
	}
	if top != dir {
		n.overlay(t, top)
		n.Run(t, "mkdir", "-p", dir)
	}
	n.Run(t, "mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", dir)
}

// overlay mounts over dir an overlay of itself with a private upper layer.
func (n *Node) overlay(t testing.TB, dir string) {
	t.Helper()
	mounts, err := readMountinfo(fmt.Sprintf("/proc/%d/mountinfo", n.holder.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if strings.HasPrefix(m.point, dir+"/") || dir == "/" {
			t.Fatalf("node %s: cannot give it a private directory under %s: an overlay of %s would hide %s mounted below it",
				n.NS.Name, dir, dir, m.point)
		}
	}
	layers := "/run/kubetest-overlay" + dir
	n.Run(t, "mkdir", "-p", layers+"/upper", layers+"/work")
	n.Run(t, "mount", "-t", "overlay", "overlay", "-o",
		fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", dir, layers, layers), dir)
}

// MountType is the filesystem mounted at path in the node's mount
// namespace (the last mount there, which hides the others), or "" when
// path is no mount point: for tests to check what the node sees.
func (n *Node) MountType(t testing.TB, path string) string {
	t.Helper()
	mounts, err := readMountinfo(fmt.Sprintf("/proc/%d/mountinfo", n.holder.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	fstype := ""
	for _, m := range mounts {
		if m.point == path {
			fstype = m.fstype
		}
	}
	return fstype
}
