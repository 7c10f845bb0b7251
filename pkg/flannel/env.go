package flannel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/regfile"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

// pollInterval is how often ADD looks for a missing subnet.env: short
// against the wait, long against a stat.
const pollInterval = 50 * time.Millisecond

// errNoEnv marks a subnet.env that is not there.
var errNoEnv = errors.New("subnet.env missing")

// daemonHint says who writes subnet.env and how to check it: operators who
// find it missing are often told to copy it from another node, which gives
// two nodes one subnet. Callers name the file before it.
const daemonHint = "The file is written by the subnet daemon on THIS node (subnetd, or flanneld) once it holds the node's lease. " +
	"Check that daemon on this node: `systemctl status subnetd` (logs: `journalctl -u subnetd`); with the DaemonSet, " +
	"`kubectl -n kube-flannel get pods -o wide` (the pod on this node, and its logs); or `curl -s http://127.0.0.1:8471/readyz` " +
	"(its --healthz-port). Never copy subnet.env from another node: two nodes would then hand out the same pod addresses"

// waitEnv reads subnet.env, waiting up to c.wait for it to appear. A file
// that is there but unusable is read again within the wait too: a daemon
// that does not replace it atomically may be writing it. Each read is
// bounded and never blocks (envfile.Read), so that whatever the path names
// the wait holds.
func waitEnv(ctx context.Context, c *NetConf) (envfile.Env, error) {
	deadline := time.Now().Add(c.wait)
	for {
		e, err := readEnv(c)
		if err == nil {
			return e, nil
		}
		if !time.Now().Before(deadline) {
			if errors.Is(err, errNoEnv) {
				return e, netconf.Errorf(netconf.CodeTryAgainLater, "%s does not exist (waited %v for it). %s",
					c.SubnetFile, c.wait, daemonHint)
			}
			return e, err
		}
		select {
		case <-ctx.Done():
			return e, fmt.Errorf("waiting for %s: %w", c.SubnetFile, ctx.Err())
		case <-time.After(min(pollInterval, time.Until(deadline))):
		}
	}
}

// readEnv reads subnet.env once and checks that it holds what flannel
// requires: a subnet and a network of some family, and the MTU.
func readEnv(c *NetConf) (envfile.Env, error) {
	e, err := envfile.Read(c.SubnetFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return e, errNoEnv
	case errors.Is(err, regfile.ErrNotRegular):
		return e, netconf.Errorf(netconf.CodeDecoding, "subnetFile must name the regular file the daemon writes (flanneld's and subnetd's: %s); "+
			"fix \"subnetFile\" in the configuration, or remove what is in the file's place and restart the daemon: %w", envfile.DefaultPath, err)
	case errors.Is(err, envfile.ErrSyntax):
		return e, netconf.Errorf(netconf.CodeDecoding, "the node's subnet file is unusable; it is the daemon's, not to be edited: "+
			"restart the daemon so that it rewrites it. %s: %w", daemonHint, err)
	case err != nil:
		return e, netconf.Errorf(netconf.CodeIO, "reading %s: %w", c.SubnetFile, err)
	}
	var missing []string
	if !e.Subnet.IsValid() && !e.IPv6Subnet.IsValid() {
		missing = append(missing, "FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET")
	}
	if !e.Network.IsValid() && !e.IPv6Network.IsValid() {
		missing = append(missing, "FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK")
	}
	if e.MTU == 0 {
		missing = append(missing, "FLANNEL_MTU")
	}
	if len(missing) > 0 {
		return e, netconf.Errorf(netconf.CodeDecoding, "%s is missing %s. %s", c.SubnetFile, strings.Join(missing, ", "), daemonHint)
	}
	return e, nil
}

// statusOf turns a subnet.env problem into STATUS's "plugin not available".
func statusOf(c *NetConf, err error) error {
	if errors.Is(err, errNoEnv) {
		return netconf.Errorf(netconf.CodeUnavailable, "%s does not exist. %s", c.SubnetFile, daemonHint)
	}
	return netconf.Errorf(netconf.CodeUnavailable, "the node's subnet is unknown: %w", err)
}
