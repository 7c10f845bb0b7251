package reliability

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// Bounds of a plugin run on hostile input. The plugins peak at ~15 MB; the
// address-space limit turns a reader without bound into a quick crash
// instead of a machine out of memory.
const (
	maxPluginRSS = 64 << 20
	addressLimit = "--as=2147483648"
)

// peakRSSEnv makes the test binary a wrapper that runs its arguments and
// writes their peak RSS to the file it names. wait4 run by the test itself
// would report the test's own peak: Go starts children with vfork, and the
// kernel carries the parent's peak over to the child at exec. The wrapper's
// is a few MB.
const peakRSSEnv = "CNI_RELIABILITY_PEAK_RSS"

func init() {
	if out := os.Getenv(peakRSSEnv); out != "" {
		os.Exit(runMeasured(out, os.Args[1:]))
	}
}

// runMeasured runs argv with the wrapper's stdio and exits as it did.
func runMeasured(out string, argv []string) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "peak RSS wrapper:", err)
		return 127
	}
	peak := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	if err := os.WriteFile(out, []byte(strconv.FormatInt(peak, 10)), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "peak RSS wrapper:", err)
		return 127
	}
	return cmd.ProcessState.ExitCode()
}

// measured is a flannel ADD in a node namespace, limited in address space,
// whose peak RSS peak reads once it ran.
func measured(t *testing.T, conf map[string]any) (c call, peak func() int64) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "peak")
	node, pod := netnstest.New(t, "cni-rel-node"), netnstest.New(t, "cni-rel-pod")
	c = call{plugin: "flannel", cmd: "ADD", node: node, netns: pod.Path, containerID: "bounded-ctr", ifname: "eth0",
		umask: -1, stdin: mustJSON(t, conf), env: []string{peakRSSEnv + "=" + out}, wrap: []string{self, "prlimit", addressLimit, "--"}}
	return c, func() int64 {
		data, err := os.ReadFile(out)
		n, perr := strconv.ParseInt(string(data), 10, 64)
		if err != nil || perr != nil {
			t.Fatalf("the plugin's peak RSS: %v %v", err, perr)
		}
		return n
	}
}

// TestFlannelSubnetFileNotAFile: subnetFile naming /dev/zero (read without
// end, 3.7 GB before), a FIFO without writer (open blocked forever) or a
// directory fails with code 6 once subnetFileWait is over, naming the file
// and what it is, in bounded memory.
func TestFlannelSubnetFileNotAFile(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, kind := range map[string]string{"/dev/zero": "a character device", fifo: "a FIFO", dir: "a directory"} {
		conf := flannelConf(t, t.TempDir(), "relbounded")
		conf["subnetFile"], conf["subnetFileWait"] = path, "1s"
		c, peak := measured(t, conf)
		start := time.Now()
		o := c.run(t)
		took := time.Since(start)
		if code := o.code(t); code != 6 || !strings.Contains(o.stdout, path) || !strings.Contains(o.stdout, kind) {
			t.Errorf("subnetFile %s: code %d, %s; want 6 naming it and saying it is %s", path, code, o.stdout, kind)
		}
		if took > 6*time.Second {
			t.Errorf("subnetFile %s: took %v, want about the 1s subnetFileWait", path, took)
		}
		p := peak()
		t.Logf("subnetFile %s: code 6 after %v, peak RSS %.1f MB", path, took.Round(time.Millisecond), float64(p)/(1<<20))
		if p > maxPluginRSS {
			t.Errorf("subnetFile %s: peak RSS %d MB, want under %d MB", path, p>>20, maxPluginRSS>>20)
		}
	}
}

// TestStdinOverLimit: 100 MB of whitespace on a plugin's stdin is refused
// with code 6 after the first MiB, never read whole nor parsed (247 MB RSS
// before).
func TestStdinOverLimit(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	c, peak := measured(t, nil)
	c.stdin = bytes.Repeat([]byte{' '}, 100<<20)
	o := c.run(t)
	if code := o.code(t); code != 6 || !strings.Contains(o.stdout, "1048576 bytes") {
		t.Errorf("code %d, %s; want 6 naming the 1 MiB limit", code, o.stdout)
	}
	p := peak()
	t.Logf("peak RSS %.1f MB", float64(p)/(1<<20))
	if p > maxPluginRSS {
		t.Errorf("peak RSS %d MB, want under %d MB", p>>20, maxPluginRSS>>20)
	}
}

// TestFIFOsNeverOpened: a FIFO without writer where a plugin expects a
// namespace (CNI_NETNS) or host-local's resolvConf fails at once with the
// configuration's code, where opening it blocked the plugin for good.
func TestFIFOsNeverOpened(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	node, pod := netnstest.New(t, "cni-rel-node"), netnstest.New(t, "cni-rel-pod")
	ipam := map[string]any{"type": "host-local", "subnet": "10.82.0.0/24", "dataDir": t.TempDir()}
	for _, tt := range []struct {
		name, plugin, netns string
		conf                map[string]any
		code                uint
	}{
		{"CNI_NETNS", "bridge", fifo, map[string]any{"type": "bridge", "bridge": "relfifo0", "ipam": ipam}, 4},
		{"resolvConf", "host-local", pod.Path, map[string]any{"type": "host-local", "ipam": map[string]any{"type": "host-local", "subnet": "10.82.0.0/24",
			"dataDir": t.TempDir(), "resolvConf": fifo}}, 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.conf["cniVersion"], tt.conf["name"] = "1.1.0", "relfifo"
			o := call{plugin: tt.plugin, cmd: "ADD", stdin: mustJSON(t, tt.conf), node: node, netns: tt.netns,
				containerID: "fifo-ctr", ifname: "eth0", umask: -1}.run(t)
			if code := o.code(t); code != tt.code || !strings.Contains(o.stdout, fifo) {
				t.Fatalf("code %d, %s; want %d naming %s", code, o.stdout, tt.code, fifo)
			}
		})
	}
}
