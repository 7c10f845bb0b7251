package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// dhcpServerIP is the node's address on the macvlan master's wire, where
// the DHCP server answers.
const dhcpServerIP = "10.77.0.1"

// dhcpScenario is macvlan with dhcp IPAM: each side's node runs Debian's
// dnsmasq on the far end of the master's wire and the side's own `dhcp
// daemon`, so both sides pay the same server and differ in the plugin and
// its daemon.
func dhcpScenario() scenario {
	return scenario{
		name:  "macvlan+dhcp",
		about: "macvlan mode bridge on a veth master, ipam dhcp: the side's own `dhcp daemon` in the node, dnsmasq (--no-ping) on the master's peer",
		bins:  []string{"macvlan", "dhcp"},
		conf: func(_, dataDir string) (map[string]any, error) {
			return conflist(map[string]any{"type": "macvlan", "master": macvlanMaster, "mode": "bridge",
				"ipam": map[string]any{"type": "dhcp", "daemonSocketPath": filepath.Join(dhcpDir(dataDir), "dhcp.sock")}}), nil
		},
		setup:  setupDHCP,
		target: targets{add: 0.5},
	}
}

// dhcpDir keeps the server's and the daemon's files beside the side's
// dataDir, where the leak count looks for host-local's records only.
func dhcpDir(dataDir string) string { return filepath.Join(filepath.Dir(dataDir), "dhcp") }

// setupDHCP gives the node the macvlan master, dnsmasq on its peer and the
// side's dhcp daemon on dhcpDir's socket; both end with ctx.
func setupDHCP(ctx context.Context, node *namespace, sd side, dataDir string) error {
	dir := dhcpDir(dataDir)
	if err := setupMaster(ctx, node, sd, dataDir); err != nil {
		return err
	}
	if err := ip(ctx, "-n", node.name, "addr", "add", dhcpServerIP+"/24", "dev", macvlanMaster+"p"); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	startServer(ctx, node, "/usr/sbin/dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--user=root", "--port=0",
		"--interface="+macvlanMaster+"p", "--bind-interfaces", "--no-ping", "--dhcp-authoritative",
		"--dhcp-range=10.77.0.10,10.77.0.250,255.255.255.0,3600", "--dhcp-option=option:router,"+dhcpServerIP,
		"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"), "--pid-file="+filepath.Join(dir, "dnsmasq.pid"))
	socket := filepath.Join(dir, "dhcp.sock")
	args := []string{"daemon", "-socketpath", socket}
	if sd.name == "ours" {
		args = append(args, "-statedir", filepath.Join(dir, "state"))
	}
	startServer(ctx, node, filepath.Join(sd.dir, "dhcp"), args...)
	return waitForFile(ctx, socket, 10*time.Second)
}

// startServer runs a server in node until ctx ends; its exit is reaped.
func startServer(ctx context.Context, node *namespace, bin string, args ...string) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", node.name, bin}, args...)...)
	if err := cmd.Start(); err == nil {
		go func() { _ = cmd.Wait() }()
	}
}

// waitForFile waits until path exists: a daemon's socket once it serves.
func waitForFile(ctx context.Context, path string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		_, err := os.Stat(path)
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not appear within %s", path, within)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
