package cnictl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// execCommand is one of add, check, del and gc: they run the plugins of a
// network the way a runtime does, through libcni (cnitool's job, with names
// instead of environment variables).
func execCommand(verb string) *command {
	common := "[--ifname I] [--container-id ID] [--args 'K=V;...'] [dirs: -h]"
	cmds := map[string]*command{
		"add": {run: execAdd, usage: "NETWORK NETNS " + common + " [--port-mapping H:C/PROTO]... [--json]",
			summary: "attach the namespace (a name in /run/netns or a path) to NETWORK and print the result"},
		"check": {run: execCheck, usage: "NETWORK NETNS " + common,
			summary: "ask NETWORK's plugins whether the attachment is still as ADD made it"},
		"del": {run: execDel, usage: "NETWORK NETNS " + common,
			summary: "detach the namespace from NETWORK (again is fine; the namespace may be gone)"},
		"gc": {run: execGC, usage: "NETWORK [--keep ID[/IFNAME]]... [dirs: -h]",
			summary: "delete NETWORK's cached attachments not kept, then run the plugins' GC"},
	}
	c := cmds[verb]
	c.name = verb
	return c
}

// execOpts are the flags of add, check and del.
type execOpts struct {
	confDir, binDir, cacheDir, ifName, containerID, args string
	ports                                                []string
	json                                                 bool
}

// multi is a flag that may be given more than once.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// call is one resolved command line: the network, the runtime's view of
// the attachment and the libcni to run it with.
type call struct {
	list *libcni.NetworkConfigList
	rt   *libcni.RuntimeConf
	cni  *libcni.CNIConfig
	o    execOpts
}

func parseExec(e *env, verb string, args []string) (*call, error) {
	fs := newFlagSet(e, verb)
	var o execOpts
	fs.StringVar(&o.confDir, "cni-conf-dir", "/etc/cni/net.d", "where the network configurations are")
	fs.StringVar(&o.binDir, "cni-bin-dir", "/opt/cni/bin", "where the plugins are (a colon-separated list)")
	fs.StringVar(&o.cacheDir, "cache-dir", libcni.CacheDir, "libcni's cache: ADD's results, which CHECK and DEL read")
	fs.StringVar(&o.ifName, "ifname", "eth0", "the interface name inside the namespace")
	fs.StringVar(&o.containerID, "container-id", "", "the attachment's container ID (default: derived from NETNS, so that add, check and del agree)")
	fs.StringVar(&o.args, "args", "", "CNI_ARGS, e.g. 'IgnoreUnknown=1;K8S_POD_NAME=web'")
	var ports multi
	if verb == "add" {
		fs.BoolVar(&o.json, "json", false, "print the plugins' result as JSON")
		fs.Var(&ports, "port-mapping", "a host port to forward, HOST:CONTAINER/PROTO (e.g. 8080:80/tcp); may repeat")
	}
	ops, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if len(ops) != 2 {
		return nil, usagef("%s takes NETWORK and NETNS, got %q", verb, ops)
	}
	o.ports = ports
	c := &call{o: o}
	if c.list, err = loadNetwork(o.confDir, ops[0]); err != nil {
		return nil, err
	}
	if c.rt, err = runtimeConf(o, nsPath(ops[1])); err != nil {
		return nil, err
	}
	c.cni = libcni.NewCNIConfigWithCacheDir(filepath.SplitList(o.binDir), o.cacheDir, nil)
	return c, nil
}

// nsPath takes a namespace name ("pod1", as `ip netns` names it) or a path.
func nsPath(s string) string {
	if strings.Contains(s, "/") {
		return s
	}
	return "/run/netns/" + s
}

// loadNetwork finds a network by name, in a .conflist or else a .conf, and
// names the networks there are when it is not one of them.
func loadNetwork(confDir, name string) (*libcni.NetworkConfigList, error) {
	list, err := libcni.LoadNetworkConf(confDir, name)
	if err == nil {
		return list, nil
	}
	var nf libcni.NotFoundError
	var none libcni.NoConfigsFoundError
	if errors.As(err, &nf) || errors.As(err, &none) {
		var names []string
		files, _ := libcni.ConfFiles(confDir, []string{".conf", ".conflist", ".json"})
		for _, f := range files {
			if l, err := libcni.NetworkConfFromFile(f); err == nil {
				names = append(names, l.Name)
			} else if c, err := pluginConfFromFile(f); err == nil {
				names = append(names, c.Network.Name)
			}
		}
		return nil, fmt.Errorf("no network %q in %s (networks there: %s); name one of them or pass the directory with --cni-conf-dir",
			name, confDir, cmp(strings.Join(names, ", "), "none"))
	}
	return nil, fmt.Errorf("loading network %q from %s: %w", name, confDir, err)
}

// pluginConfFromFile reads a single-plugin .conf file, the format libcni
// still loads (and upconverts to a list) but whose file reader it deprecated.
func pluginConfFromFile(name string) (*libcni.PluginConfig, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	return libcni.NetworkPluginConfFromBytes(b)
}

// runtimeConf builds what a runtime passes: the container ID (derived from
// the namespace path when not given), CNI_ARGS and port mappings.
func runtimeConf(o execOpts, netnsPath string) (*libcni.RuntimeConf, error) {
	rt := &libcni.RuntimeConf{ContainerID: o.containerID, NetNS: netnsPath, IfName: o.ifName}
	if rt.ContainerID == "" {
		sum := sha256.Sum256([]byte(netnsPath))
		rt.ContainerID = "cnictl-" + hex.EncodeToString(sum[:8])
	}
	for kv := range strings.SplitSeq(o.args, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("--args %q: each argument is KEY=VALUE, separated by ';'", o.args)
		}
		rt.Args = append(rt.Args, [2]string{k, v})
	}
	var maps []map[string]any
	for _, p := range o.ports {
		m, err := parsePortMapping(p)
		if err != nil {
			return nil, err
		}
		maps = append(maps, m)
	}
	if len(maps) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": maps}
	}
	return rt, nil
}

// parsePortMapping reads HOST:CONTAINER/PROTO (PROTO defaults to tcp) into
// the portMappings capability's form.
func parsePortMapping(s string) (map[string]any, error) {
	ports, proto, _ := strings.Cut(s, "/")
	hp, cp, ok := strings.Cut(ports, ":")
	h, err1 := strconv.ParseUint(hp, 10, 16)
	c, err2 := strconv.ParseUint(cp, 10, 16)
	proto = cmp(proto, "tcp")
	if !ok || err1 != nil || err2 != nil || h == 0 || c == 0 || !slices.Contains([]string{"tcp", "udp", "sctp"}, proto) {
		return nil, usagef("--port-mapping %q: write HOST:CONTAINER/PROTO, ports 1-65535, PROTO tcp, udp or sctp (e.g. 8080:80/tcp)", s)
	}
	return map[string]any{"hostPort": h, "containerPort": c, "protocol": proto}, nil
}

func timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

func execAdd(e *env, args []string) error {
	c, err := parseExec(e, "add", args)
	if err != nil {
		return err
	}
	if _, err := os.Stat(c.rt.NetNS); err != nil {
		return fmt.Errorf("namespace %s: %w; create it with `ip netns add NAME` or pass a path like /proc/PID/ns/net", c.rt.NetNS, err)
	}
	ctx, cancel := timeout()
	defer cancel()
	res, err := c.cni.AddNetworkList(ctx, c.list, c.rt)
	if err != nil {
		return pluginError("add", c, err)
	}
	if c.o.json {
		return printJSON(e.stdout, res)
	}
	return printResult(e, c, res)
}

func execCheck(e *env, args []string) error {
	c, err := parseExec(e, "check", args)
	if err != nil {
		return err
	}
	ctx, cancel := timeout()
	defer cancel()
	if err := c.cni.CheckNetworkList(ctx, c.list, c.rt); err != nil {
		return pluginError("check", c, err)
	}
	_, err = fmt.Fprintf(e.stdout, "%s: attachment %s/%s in %s is as ADD made it\n", c.list.Name, c.rt.ContainerID, c.rt.IfName, c.rt.NetNS)
	return err
}

func execDel(e *env, args []string) error {
	c, err := parseExec(e, "del", args)
	if err != nil {
		return err
	}
	ctx, cancel := timeout()
	defer cancel()
	if err := c.cni.DelNetworkList(ctx, c.list, c.rt); err != nil {
		return pluginError("del", c, err)
	}
	_, err = fmt.Fprintf(e.stdout, "%s: deleted attachment %s/%s in %s\n", c.list.Name, c.rt.ContainerID, c.rt.IfName, c.rt.NetNS)
	return err
}

// pluginError shows a plugin's CNI error with its code, message and
// details; every other failure (a missing binary, say) as it is.
func pluginError(verb string, c *call, err error) error {
	var te *types.Error
	if !errors.As(err, &te) {
		return fmt.Errorf("%s %s: %w", verb, c.list.Name, err)
	}
	msg := fmt.Sprintf("%s %s: plugin error %d (%s): %s", verb, c.list.Name, te.Code, codeName(te.Code), te.Msg)
	if te.Details != "" {
		msg += "; details: " + te.Details
	}
	return errors.New(msg)
}

// codeName is the CNI specification's name of an error code.
func codeName(code uint) string {
	names := map[uint]string{1: "incompatible CNI version", 2: "unsupported field", 3: "container unknown or does not exist",
		4: "invalid environment variables", 5: "I/O failure", 6: "failed to decode content", 7: "invalid network config",
		11: "try again later", 50: "plugin not available", 51: "plugin not available: limited resources", 999: "internal"}
	if n, ok := names[code]; ok {
		return n
	}
	return "plugin-specific"
}

// printResult prints a result for people: the container ID to pass to check
// and del when it was derived, then interfaces, addresses, routes and DNS.
func printResult(e *env, c *call, res types.Result) error {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("reading the result: %w; --json prints it as the plugins gave it", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: attached %s/%s in %s\n", c.list.Name, c.rt.ContainerID, c.rt.IfName, c.rt.NetNS)
	b.WriteString("interfaces:\n")
	for i, ifc := range r.Interfaces {
		where := "host"
		if ifc.Sandbox != "" {
			where = "in " + ifc.Sandbox
		}
		fmt.Fprintf(&b, "  [%d] %-16s %-17s %s\n", i, ifc.Name, ifc.Mac, where)
	}
	b.WriteString("addresses:\n")
	for _, ip := range r.IPs {
		on := ""
		if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(r.Interfaces) {
			on = " on " + r.Interfaces[*ip.Interface].Name
		}
		gw := ""
		if ip.Gateway != nil {
			gw = " gateway " + ip.Gateway.String()
		}
		fmt.Fprintf(&b, "  %s%s%s\n", ip.Address.String(), gw, on)
	}
	if len(r.Routes) > 0 {
		b.WriteString("routes:\n")
	}
	for _, rt := range r.Routes {
		via := ""
		if rt.GW != nil {
			via = " via " + rt.GW.String()
		}
		fmt.Fprintf(&b, "  %s%s\n", rt.Dst.String(), via)
	}
	if len(r.DNS.Nameservers) > 0 {
		fmt.Fprintf(&b, "dns: %s\n", strings.Join(r.DNS.Nameservers, ", "))
	}
	_, err = io.WriteString(e.stdout, b.String())
	return err
}

func execGC(e *env, args []string) error {
	fs := newFlagSet(e, "gc")
	var confDir, binDir, cacheDir string
	var keep multi
	fs.StringVar(&confDir, "cni-conf-dir", "/etc/cni/net.d", "where the network configurations are")
	fs.StringVar(&binDir, "cni-bin-dir", "/opt/cni/bin", "where the plugins are (a colon-separated list)")
	fs.StringVar(&cacheDir, "cache-dir", libcni.CacheDir, "libcni's cache, which lists the attachments")
	fs.Var(&keep, "keep", "an attachment to keep: a container ID (all its interfaces) or ID/IFNAME; may repeat")
	ops, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(ops) != 1 {
		return usagef("gc takes one NETWORK, got %q", ops)
	}
	list, err := loadNetwork(confDir, ops[0])
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(binDir), cacheDir, nil)
	cached, err := cni.GetCachedAttachments("")
	if err != nil {
		return fmt.Errorf("reading libcni's cache in %s: %w", cacheDir, err)
	}
	valid, stale := splitKept(list.Name, cached, keep)
	ctx, cancel := timeout()
	defer cancel()
	err = cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid})
	for _, a := range stale {
		fmt.Fprintf(e.stdout, "%s: deleted attachment %s/%s in %s\n", list.Name, a.ContainerID, a.IfName, a.NetNS)
	}
	gc := "no GC verb before CNI 1.1.0"
	if ok, _ := version.GreaterThanOrEqualTo(list.CNIVersion, "1.1.0"); ok {
		gc = "ran the plugins' GC"
	}
	fmt.Fprintf(e.stdout, "%s: kept %d attachments, deleted %d, %s\n", list.Name, len(valid), len(stale), gc)
	if err != nil {
		return fmt.Errorf("gc %s: %w", list.Name, err)
	}
	return nil
}

// splitKept sorts network's cached attachments into those keep names and
// the others.
func splitKept(network string, cached []*libcni.NetworkAttachment, keep []string) (valid []types.GCAttachment, stale []*libcni.NetworkAttachment) {
	valid = []types.GCAttachment{}
	for _, a := range cached {
		if a.Network != network {
			continue
		}
		if slices.Contains(keep, a.ContainerID) || slices.Contains(keep, a.ContainerID+"/"+a.IfName) {
			valid = append(valid, types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName})
		} else {
			stale = append(stale, a)
		}
	}
	for _, k := range keep { // an attachment the cache does not know, named exactly
		id, ifName, ok := strings.Cut(k, "/")
		if a := (types.GCAttachment{ContainerID: id, IfName: ifName}); ok && !slices.Contains(valid, a) {
			valid = append(valid, a)
		}
	}
	return valid, stale
}
