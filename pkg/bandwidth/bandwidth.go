// Package bandwidth is the bandwidth plugin: chained after the plugin that
// makes a pod's veth pair, it limits the traffic to the pod with a qdisc on
// the node side of the veth, and the traffic from the pod with one on an
// ifb device that the veth's ingress redirects to; a drop-in replacement
// for the reference CNI bandwidth plugin, over netlink (no tc process). The
// bandwidth binary runs it.
//
// It must not import another plugin's package, pkg/overlay or pkg/subnet.
package bandwidth

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
)

// Plugin is the bandwidth plugin's verbs.
type Plugin struct{}

// shaper builds what shapes one direction: the remote end of its packets
// is the source on the way to the pod, the destination from it.
func (c *conf) shaper(d direction, remote end) shaper {
	s := shaper{scope: c.scope, subnets: c.subnets, remote: remote}
	s.bucket, s.reference = buckets(d)
	return s
}

// Add shapes the pod's traffic as configured and passes the prevResult on,
// with the ifb added to its interfaces when egress is limited, as the
// reference does. Without limits it changes nothing.
func (Plugin) Add(ctx context.Context, a *cniplugin.Args) (_ types.Result, retErr error) {
	c, prev, err := loadChained(a.StdinData)
	if err != nil {
		return nil, err
	}
	if !c.shapes() {
		return prev, nil
	}
	host, err := hostVeth(a.Netns, a.IfName, prev)
	if err != nil {
		return nil, err
	}
	undo := &cniplugin.Undo{}
	defer undo.OnError(&retErr, a.Logger())
	if c.ingress.set() {
		warnSmallBurst(a, "ingressBurst", c.ingress, host)
		if err := c.shaper(c.ingress, src).install(undo, host.Attrs().Index); err != nil {
			return nil, fmt.Errorf("shaping the traffic to the pod on %s: %w", host.Attrs().Name, err)
		}
	}
	if c.egress.set() {
		ifb, err := shapeEgress(undo, a, c, host)
		if err != nil {
			return nil, err
		}
		prev.Interfaces = append(prev.Interfaces, &current.Interface{Name: ifb.Name, Mac: ifb.HardwareAddr.String()})
	}
	a.Logger().Info("bandwidth limited", "hostVeth", host.Attrs().Name, "ingressRate", c.ingress.rate, "egressRate", c.egress.rate, "subnets", c.subnets)
	return prev, nil
}

// shapeEgress shapes the traffic from the pod: the ifb's root qdisc first,
// so that nothing is redirected to it unshaped, then the redirect.
func shapeEgress(undo *cniplugin.Undo, a *cniplugin.Args, c *conf, host netlink.Link) (*netlink.Ifb, error) {
	warnSmallBurst(a, "egressBurst", c.egress, host)
	ifb, err := createIFB(undo, c.Name, a.ContainerID, host.Attrs().MTU)
	if err != nil {
		return nil, err
	}
	if err := c.shaper(c.egress, dst).install(undo, ifb.Index); err != nil {
		return nil, fmt.Errorf("shaping the traffic from the pod on %s: %w", ifb.Name, err)
	}
	if err := redirect(undo, host.Attrs().Index, ifb.Index); err != nil {
		return nil, fmt.Errorf("redirecting the traffic from the pod on %s to %s: %w", host.Attrs().Name, ifb.Name, err)
	}
	return ifb, nil
}

// warnSmallBurst logs a burst below the MTU: the kernel drops every packet
// larger than the burst, as it does for the reference.
func warnSmallBurst(a *cniplugin.Args, key string, d direction, host netlink.Link) {
	if mtu := host.Attrs().MTU; d.burst/8 < uint64(mtu) {
		a.Logger().Warn("the burst is smaller than the MTU: larger packets are dropped; raise "+key, "bytes", d.burst/8, "mtu", mtu)
	}
}

// loadChained reads the configuration and the prevResult, which a chained
// plugin needs.
func loadChained(stdin []byte) (*conf, *current.Result, error) {
	c, err := loadConf(stdin)
	if err != nil {
		return nil, nil, err
	}
	prev, err := c.ChainedPrevResult("the plugin that makes the pod's veth (bridge, ptp, flannel)")
	return c, prev, err
}

// Check verifies that each limited direction is shaped as configured: the
// root qdisc of the veth's node side, the ifb's, and the redirect to it.
func (Plugin) Check(_ context.Context, a *cniplugin.Args) error {
	c, prev, err := loadChained(a.StdinData)
	if err != nil || !c.shapes() {
		return err
	}
	host, err := hostVeth(a.Netns, a.IfName, prev)
	if err != nil {
		return err
	}
	if c.ingress.set() {
		if err := c.shaper(c.ingress, src).check(host); err != nil {
			return err
		}
	}
	if !c.egress.set() {
		return nil
	}
	name := ifbName(c.Name, a.ContainerID)
	ifb, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("the pod's egress is not shaped: its ifb %s: %w%s", name, err, redo)
	}
	if err := c.shaper(c.egress, dst).check(ifb); err != nil {
		return err
	}
	return checkRedirect(host, ifb.Attrs().Index)
}

// Del deletes the attachment's ifb, found by its name, so that it needs
// neither the prevResult nor the pod's namespace; a missing ifb is success.
// The qdiscs on the node side of the veth go with the veth, which the
// plugin that made it deletes next (a chain's DEL runs in reverse).
func (Plugin) Del(_ context.Context, a *cniplugin.Args) error {
	var b netconf.Base
	if err := netconf.Load(a.StdinData, &b); err != nil {
		return err
	}
	return link.DeleteIfExists(ifbName(b.Name, a.ContainerID))
}

// GC deletes the ifbs this plugin made for the network (ofNetwork) but for
// those of the valid attachments. Those of other networks, the reference's
// (it marks none) and any other link are kept.
func (Plugin) GC(_ context.Context, a *cniplugin.Args) error {
	var b netconf.Base
	if err := netconf.Load(a.StdinData, &b); err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, v := range b.ValidList() {
		valid[ifbName(b.Name, v.ContainerID)] = true
	}
	links, err := link.RetryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if !ofNetwork(l, b.Name) || valid[l.Attrs().Name] {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !link.IsNotFound(err) && !errors.Is(err, syscall.ENODEV) {
			errs = append(errs, fmt.Errorf("deleting ifb %s (alias %q): %w", l.Attrs().Name, l.Attrs().Alias, err))
		}
	}
	return errors.Join(errs...)
}

// Status: the plugin needs nothing but the kernel to serve ADD.
func (Plugin) Status(_ context.Context, a *cniplugin.Args) error {
	_, err := loadConf(a.StdinData)
	return err
}
