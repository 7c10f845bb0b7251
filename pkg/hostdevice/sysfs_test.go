package hostdevice

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cnisuite/cni/pkg/netconf"
)

// inNodeSysfs runs fn on a thread of its own inside the node's namespace
// and a private mount namespace where /sys is the node's sysfs, as `ip
// netns exec` gives a program: kernelpath then reads the node's devices,
// never the machine's. The thread is discarded afterwards (left locked).
func (e *env) inNodeSysfs(fn func()) {
	e.t.Helper()
	done := make(chan error)
	go func() {
		defer close(done)
		runtime.LockOSThread()
		ns, err := os.Open(e.node.Path)
		if err == nil {
			err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
			ns.Close()
		}
		if err == nil {
			err = unix.Unshare(unix.CLONE_NEWNS)
		}
		if err == nil {
			err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
		}
		if err == nil {
			err = unix.Mount("sysfs", "/sys", "sysfs", 0, "")
		}
		if err != nil {
			done <- err
			return
		}
		fn()
	}()
	if err := <-done; err != nil {
		e.t.Fatalf("entering the node's sysfs: %v", err)
	}
}

// TestKernelPath: the device found through the sysfs path a veth has, its
// parent device's directory (/sys/devices/virtual, whose net directory
// lists the namespace's virtual links, the device first).
func TestKernelPath(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(`"kernelpath":"/sys/devices/virtual"`)
	var addErr, delErr error
	e.inNodeSysfs(func() {
		if _, addErr = e.run("ADD", conf, nil); addErr == nil {
			e.lent(nil)
			_, delErr = e.run("DEL", conf, nil)
		}
	})
	if addErr != nil || delErr != nil {
		t.Fatalf("ADD: %v; DEL: %v", addErr, delErr)
	}
	e.returned(false)
	_, err := e.run("ADD", e.conf(`"kernelpath":"/sys/devices/nope"`), nil)
	wantCode(t, err, netconf.CodeInvalidConfig)
}

// fakeBus is a sysfs tree of the test's own: PCI devices 0000:00:05.0 (a
// kernel driver, the device as its net entry) and 0000:00:06.0 (vfio-pci,
// DPDK), and the auxiliary device mlx5_core.sf.2 with the device.
func fakeBus(t *testing.T) string {
	t.Helper()
	sys := t.TempDir()
	for _, d := range []string{"bus/pci/drivers/e1000e", "bus/pci/drivers/vfio-pci",
		"bus/pci/devices/0000:00:05.0/net/" + devName, "bus/pci/devices/0000:00:06.0",
		"bus/auxiliary/devices/mlx5_core.sf.2/net/" + devName} {
		if err := os.MkdirAll(filepath.Join(sys, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for dev, drv := range map[string]string{"0000:00:05.0": "e1000e", "0000:00:06.0": "vfio-pci"} {
		if err := os.Symlink(filepath.Join(sys, "bus/pci/drivers", drv), filepath.Join(sys, "bus/pci/devices", dev, "driver")); err != nil {
			t.Fatal(err)
		}
	}
	return sys
}

// TestBusAddresses: pciBusID and runtimeConfig.deviceID (PCI or auxiliary)
// find the device through the bus's net directory; a PCI device bound to
// a DPDK driver gets IPAM only, nothing moved, and DEL releases it.
func TestBusAddresses(t *testing.T) {
	for _, tc := range []struct{ name, keys string }{
		{"pciBusID", `"pciBusID":"0000:00:05.0"`},
		{"deviceID PCI", `"runtimeConfig":{"deviceID":"0000:00:05.0"}`},
		{"deviceID auxiliary", `"runtimeConfig":{"deviceID":"mlx5_core.sf.2"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.p = withSysfs(fakeBus(t))
			conf := e.conf(tc.keys, dual...)
			res, err := e.run("ADD", conf, nil)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			e.lent(res)
			if _, err := e.run("CHECK", conf, res); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if _, err := e.run("DEL", conf, nil); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			e.returned(false)
		})
	}
	t.Run("DPDK", func(t *testing.T) {
		e := newEnv(t)
		e.p = withSysfs(fakeBus(t))
		conf := e.conf(`"pciBusID":"0000:00:06.0"`, dual[:1]...)
		res, err := e.run("ADD", conf, nil)
		if err != nil {
			t.Fatalf("ADD: %v", err)
		}
		if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "eth0" || res.Interfaces[0].Mac != "" || len(res.IPs) != 1 || e.reservations() != 1 {
			t.Errorf("result %+v, %d reservations; want eth0 without MAC and one address", res, e.reservations())
		}
		if _, err := e.run("CHECK", conf, res); err != nil {
			t.Errorf("CHECK: %v", err)
		}
		if _, err := e.run("DEL", conf, nil); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if !strings.Contains(show(e.node, devName), ",UP") || e.reservations() != 0 {
			t.Errorf("after DEL: %s, %d reservations", show(e.node, devName), e.reservations())
		}
	})
	for _, tc := range []struct{ name, keys, want string }{
		{"no such PCI device", `"pciBusID":"0000:00:07.0"`, "no driver bound"},
		{"no such deviceID", `"runtimeConfig":{"deviceID":"0000:00:07.0"}`, "neither a PCI nor an auxiliary device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.p = withSysfs(fakeBus(t))
			_, err := e.run("ADD", e.conf(tc.keys), nil)
			wantCode(t, err, netconf.CodeInvalidConfig)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}
