package cnictl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/cnisuite/cni/pkg/bridge"
	"github.com/cnisuite/cni/pkg/flannel"
	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/ipam/stale"
	"github.com/cnisuite/cni/pkg/link"
	"github.com/cnisuite/cni/pkg/netconf"
	"github.com/cnisuite/cni/pkg/netfilter/hostport"
	"github.com/cnisuite/cni/pkg/netfilter/leftovers"
	"github.com/cnisuite/cni/pkg/netns"
	"github.com/cnisuite/cni/pkg/overlay"
	"github.com/cnisuite/cni/pkg/regfile"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
)

func resetCommand() *command {
	return &command{name: "reset", run: reset,
		usage:   "[--dry-run] [--force] [--netns PATH] [dirs and files: -h]",
		summary: "remove what the suite made on this node; refuses while pods are attached unless --force"}
}

// resetOpts are the node's paths; tests point them at temp dirs and a
// namespace they made.
type resetOpts struct {
	confDir, dataDir, flannelDir, subnetFile, cacheDir, lockFile, netns string
	dryRun, force                                                       bool
}

// step is one part of the reset: what it removes, as printed, and how.
type step struct {
	what []string
	do   func() error
	inNS bool // runs inside --netns
}

// resetPlan is everything found, the pods that make reset refuse, and the
// candidates kept ("path: why").
type resetPlan struct {
	steps []step
	pods  []string
	kept  []string
}

func reset(e *env, args []string) error {
	fs := newFlagSet(e, "reset")
	var o resetOpts
	fs.StringVar(&o.confDir, "cni-conf-dir", "/etc/cni/net.d", "kubelet's CNI configuration directory (names the bridges and state dirs)")
	fs.StringVar(&o.dataDir, "data-dir", disk.DefaultDataDir, "host-local's dataDir")
	fs.StringVar(&o.flannelDir, "flannel-dir", flannel.DefaultDataDir, "the flannel plugin's dataDir")
	fs.StringVar(&o.subnetFile, "subnet-file", envfile.DefaultPath, "subnetd's lease file")
	fs.StringVar(&o.cacheDir, "cache-dir", libcni.CacheDir, "libcni's cache (its results/ entries of the configured networks go)")
	fs.StringVar(&o.lockFile, "lock-file", hostport.SweepLock, "portmap's lock file")
	fs.StringVar(&o.netns, "netns", "", "remove the links and rules of this network namespace instead of the current one's")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be removed and change nothing")
	fs.BoolVar(&o.force, "force", false, "remove even while pods are attached (cuts them off the network)")
	ops, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(ops) > 0 {
		return usagef("reset takes no operands, got %q", ops)
	}
	p, err := planReset(o)
	if err != nil {
		return err
	}
	return runReset(e, o, p)
}

// runReset prints the plan and, unless dry or refused, carries it out.
func runReset(e *env, o resetOpts, p *resetPlan) error {
	var b strings.Builder
	refused := len(p.pods) > 0 && !o.force
	verb := "removing"
	if o.dryRun || refused {
		verb = "would remove"
	}
	n := 0
	for _, s := range p.steps {
		for _, w := range s.what {
			fmt.Fprintf(&b, "%s %s\n", verb, w)
			n++
		}
	}
	if n == 0 {
		b.WriteString("nothing of the suite is left on this node\n")
	}
	for _, k := range p.kept {
		fmt.Fprintf(&b, "kept %s\n", k)
	}
	fmt.Fprintf(&b, "kept: the configurations in %s and the binaries (rm them to uninstall the suite)\n", o.confDir)
	if _, err := e.stdout.Write([]byte(b.String())); err != nil {
		return err
	}
	if refused {
		return fmt.Errorf("pods are still attached to this node:\n  %s\ndrain the node (kubectl drain) or delete the pods first, or pass --force to cut them off",
			strings.Join(p.pods, "\n  "))
	}
	if o.dryRun {
		return nil
	}
	var errs []error
	for _, s := range p.steps {
		if err := inNS(o, s.inNS, s.do); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reset incomplete: %w; run it again once the cause is fixed", err)
	}
	if n > 0 {
		fmt.Fprintf(e.stdout, "removed %d items\n", n)
	}
	return nil
}

func inNS(o resetOpts, ns bool, fn func() error) error {
	if !ns || o.netns == "" {
		return fn()
	}
	if err := netns.Do(o.netns, fn); err != nil {
		return fmt.Errorf("in --netns %s: %w", o.netns, err)
	}
	return nil
}

// planReset finds everything; nothing is changed.
func planReset(o resetOpts) (*resetPlan, error) {
	cfg, err := readSuiteConfs(o)
	if err != nil {
		return nil, err
	}
	p := &resetPlan{}
	if err := inNS(o, true, func() error { return p.planNetns(cfg) }); err != nil {
		return nil, err
	}
	if err := p.planFiles(o, cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// planNetns finds the links and rules, inside the node's namespace.
func (p *resetPlan) planNetns(cfg *suiteConfs) error {
	if err := p.planLinks(cfg.bridges); err != nil {
		return err
	}
	devices, routes, err := overlay.Leftovers()
	if err != nil {
		return err
	}
	vx := step{inNS: true, do: func() error { return overlay.Cleanup() }}
	for _, d := range devices {
		vx.what = append(vx.what, "link vxlan "+d+" (with its routes, neighbours and FDB)")
	}
	for _, r := range routes {
		vx.what = append(vx.what, fmt.Sprintf("route %s (proto %d)", r.Dst, r.Protocol))
	}
	p.add(vx)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rules, err := leftovers.ResetIPTables(ctx, nil, true)
	if err != nil {
		return err
	}
	ip := step{inNS: true, do: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := leftovers.ResetIPTables(ctx, nil, false)
		return err
	}}
	for _, r := range rules {
		ip.what = append(ip.what, "rules "+r.String())
	}
	p.add(ip)
	tables, err := leftovers.ResetNFTables(true)
	if err != nil {
		return err
	}
	p.add(step{inNS: true, what: prefixed("nft ", tables), do: func() error { _, err := leftovers.ResetNFTables(false); return err }})
	return nil
}

func (p *resetPlan) add(s step) {
	if len(s.what) > 0 {
		p.steps = append(p.steps, s)
	}
}

func prefixed(pre string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = pre + s
	}
	return out
}

// planLinks finds the bridges and the veths plugged into them: each veth is
// a pod still attached, and deleting it deletes the pod's end too.
func (p *resetPlan) planLinks(bridges []string) error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var veths, brs step
	veths.inNS, brs.inNS = true, true
	var vNames, bNames []string
	for _, l := range links {
		if br, ok := l.(*netlink.Bridge); ok && slices.Contains(bridges, br.Name) {
			brs.what = append(brs.what, "link bridge "+br.Name)
			bNames = append(bNames, br.Name)
			for _, v := range links {
				if _, ok := v.(*netlink.Veth); ok && v.Attrs().MasterIndex == br.Index {
					veths.what = append(veths.what, fmt.Sprintf("link veth %s (port of %s)", v.Attrs().Name, br.Name))
					vNames = append(vNames, v.Attrs().Name)
					p.pods = append(p.pods, fmt.Sprintf("veth %s on %s", v.Attrs().Name, br.Name))
				}
			}
		}
	}
	veths.do = func() error { return deleteLinks(vNames) }
	brs.do = func() error { return deleteLinks(bNames) }
	p.add(veths)
	p.add(brs)
	return nil
}

func deleteLinks(names []string) error {
	var errs []error
	for _, n := range names {
		errs = append(errs, link.DeleteIfExists(n))
	}
	return errors.Join(errs...)
}

// liveOwners describes the containers whose namespace is still in place,
// one line per container with all its addresses.
func liveOwners(network string, vs []stale.Verdict) []string {
	var ids []string
	addrs := map[string][]string{}
	netnsOf := map[string]string{}
	for _, v := range vs {
		if v.State != stale.Alive {
			continue
		}
		id := v.Owner.ContainerID
		if _, seen := addrs[id]; !seen {
			ids = append(ids, id)
		}
		addrs[id] = append(addrs[id], v.Addr.String())
		netnsOf[id] = v.Netns.Path
	}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, fmt.Sprintf("container %s in %s holds %s of %s", id, netnsOf[id], strings.Join(addrs[id], ", "), network))
	}
	return out
}

// pluginConf is what reset reads of one plugin's configuration: the keys
// that name a bridge or a state directory.
type pluginConf struct {
	Type       string `json:"type"`
	Bridge     string `json:"bridge"`     // bridge
	DataDir    string `json:"dataDir"`    // flannel
	SubnetFile string `json:"subnetFile"` // flannel
	IPAM       struct {
		Type    string `json:"type"`
		DataDir string `json:"dataDir"`
	} `json:"ipam"`
	Delegate struct {
		Type   string `json:"type"`
		Bridge string `json:"bridge"`
	} `json:"delegate"`
}

// suiteConfs is what the configurations in the conf dir, and the flags,
// name: the places reset cleans.
type suiteConfs struct {
	networks, bridges, dataDirs, flannelDirs, subnetFiles []string
}

func (c *suiteConfs) add(list *[]string, v string) {
	if v != "" && !slices.Contains(*list, v) {
		*list = append(*list, v)
	}
}

// readSuiteConfs reads every network configuration kubelet would (.conf,
// .conflist, .json); one that does not parse, or is not a regular file of a
// configuration's size, is skipped, since reset must work on a node whose
// configuration is broken.
func readSuiteConfs(o resetOpts) (*suiteConfs, error) {
	c := &suiteConfs{}
	c.add(&c.bridges, bridge.DefaultName)
	c.add(&c.dataDirs, o.dataDir)
	c.add(&c.flannelDirs, o.flannelDir)
	c.add(&c.subnetFiles, o.subnetFile)
	files, err := libcni.ConfFiles(o.confDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("reading the CNI configuration directory: %w; pass kubelet's with --cni-conf-dir", err)
	}
	for _, f := range files {
		var nc struct {
			pluginConf
			Name    string       `json:"name"`
			Plugins []pluginConf `json:"plugins"`
		}
		data, _, err := regfile.Read(f, netconf.MaxConfSize, regfile.Follow) // a FIFO among them must not hang reset
		if err != nil || json.Unmarshal(data, &nc) != nil {
			continue
		}
		c.add(&c.networks, nc.Name)
		for _, pc := range append(nc.Plugins, nc.pluginConf) {
			c.addPlugin(o, pc)
		}
	}
	return c, nil
}

// addPlugin records what one plugin makes, with the plugins' defaults.
func (c *suiteConfs) addPlugin(o resetOpts, pc pluginConf) {
	switch pc.Type {
	case "bridge":
		c.add(&c.bridges, cmp(pc.Bridge, bridge.DefaultName))
	case "flannel":
		if pc.Delegate.Type == "" || pc.Delegate.Type == "bridge" {
			c.add(&c.bridges, cmp(pc.Delegate.Bridge, bridge.DefaultName))
		}
		c.add(&c.flannelDirs, cmp(pc.DataDir, o.flannelDir))
		c.add(&c.subnetFiles, cmp(pc.SubnetFile, o.subnetFile))
		c.add(&c.dataDirs, cmp(pc.IPAM.DataDir, o.dataDir)) // flannel hands its ipam block to host-local
		return
	}
	if pc.IPAM.Type == "host-local" {
		c.add(&c.dataDirs, cmp(pc.IPAM.DataDir, o.dataDir))
	}
}
