package subnetd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
	subnetetcd "github.com/cnisuite/cni/pkg/subnet/etcd"
)

// Config is subnetd's command line: every flag of flanneld v0.28, with its
// name, default and meaning, so that a unit file or DaemonSet needs only the
// binary changed, and subnetd's own (README, "subnetd's command line").
// As flanneld, each flag not given is read from FLANNELD_<FLAG>
// (parseCommandLine).
type Config struct {
	EtcdEndpoints  string
	EtcdPrefix     string
	EtcdCAFile     string
	EtcdCertFile   string
	EtcdKeyFile    string
	EtcdUsername   string
	EtcdPassword   string
	EtcdTimeout    time.Duration
	Ifaces         []string // --iface, repeatable: names or addresses, tried in order
	IfaceRegex     []string // --iface-regex, repeatable, tried after Ifaces
	IfaceCanReach  string
	PublicIP       string
	PublicIPv6     string
	IPMasq         bool
	ForwardRules   bool
	NoRandomFully  bool
	IPTablesResync int // seconds, as flanneld's --iptables-resync
	BlackholeRoute bool
	SubnetFile     string
	RenewMargin    int // minutes, as flanneld's --subnet-lease-renew-margin
	HealthzIP      string
	HealthzPort    int
	LeaseTTL       time.Duration
	NetConfig      string
	DataDir        string
	NodeID         string
	CheckInterval  time.Duration
	ResyncInterval time.Duration
	Cleanup        bool
	ReleaseOnExit  bool
	EmbeddedClient string // loopback address of the embedded etcd
	EmbeddedPeer   string
	LogLevel       string
	LogFormat      string
	Verbosity      int    // flanneld's (klog's) -v
	VModule        string // klog's -vmodule: refused unless empty
	BacktraceAt    string // klog's -log_backtrace_at: refused unless empty
	Version        bool

	// The Kubernetes API mode, flanneld's --kube-subnet-mgr: the subnets
	// are the Node's pod CIDRs, the leases are Node annotations.
	KubeSubnetMgr             bool
	KubeAPIURL                string
	Kubeconfig                string
	KubeAnnotationPrefix      string
	SetNodeNetworkUnavailable bool
	NetConfigPath             string

	deprecated []string // deprecated spellings given, warned about at start
}

// oldRandomFully is subnetd's first spelling of flanneld's
// --ip-masq-fully-random-disable, kept working as a deprecated alias.
const oldRandomFully = "ip-masq-random-fully-disable"

func (c *Config) flags(fs *flag.FlagSet) {
	// flanneld's flags, in the order of its main.go.
	fs.StringVar(&c.EtcdEndpoints, "etcd-endpoints", "", "comma-separated etcd endpoints; empty runs an embedded single-member etcd on loopback (flanneld's default is http://127.0.0.1:4001,http://127.0.0.1:2379)")
	fs.StringVar(&c.EtcdPrefix, "etcd-prefix", subnetetcd.DefaultPrefix, "etcd prefix of the network config and leases")
	fs.StringVar(&c.EtcdKeyFile, "etcd-keyfile", "", "client key for etcd")
	fs.StringVar(&c.EtcdCertFile, "etcd-certfile", "", "client certificate for etcd")
	fs.StringVar(&c.EtcdCAFile, "etcd-cafile", "", "CA that signed the etcd servers' certificates")
	fs.StringVar(&c.EtcdUsername, "etcd-username", "", "etcd user name")
	fs.StringVar(&c.EtcdPassword, "etcd-password", "", "etcd password")
	fs.Var((*stringList)(&c.Ifaces), "iface", "interface (name or address) that carries the overlay; repeat it to try each in order; default: the interface of --public-ip, else of the IPv4 default route, else of the IPv6 one")
	fs.Var((*stringList)(&c.IfaceRegex), "iface-regex", "regular expression matching the overlay's interface by address, else by name; repeat it to try each in order, after every --iface")
	fs.StringVar(&c.IfaceCanReach, "iface-can-reach", "", "the overlay's interface is the one of the route to this address (ip route get), tried after --iface and --iface-regex")
	fs.StringVar(&c.SubnetFile, "subnet-file", envfile.DefaultPath, "where to write the node's subnet.env")
	fs.StringVar(&c.PublicIP, "public-ip", "", "IPv4 address other nodes reach this one at; default: the interface's first")
	fs.StringVar(&c.PublicIPv6, "public-ipv6", "", "IPv6 address other nodes reach this one at; default: the interface's first global one")
	fs.IntVar(&c.RenewMargin, "subnet-lease-renew-margin", 60, "renew the lease this many minutes before it expires")
	fs.BoolVar(&c.IPMasq, "ip-masq", false, "masquerade traffic leaving the cluster network")
	fs.BoolVar(&c.NoRandomFully, "ip-masq-fully-random-disable", false, "masquerade without --random-fully")
	fs.BoolVar(&c.KubeSubnetMgr, "kube-subnet-mgr", false, "take the node's subnets from its Node's pod CIDRs in the Kubernetes API and publish its lease as Node annotations, as flanneld does; no etcd (node name from NODE_NAME, else POD_NAME and POD_NAMESPACE)")
	fs.StringVar(&c.KubeAPIURL, "kube-api-url", "", "Kubernetes API server URL (--kube-subnet-mgr); default: --kubeconfig-file's, or in-cluster")
	fs.StringVar(&c.KubeAnnotationPrefix, "kube-annotation-prefix", defaultKubePrefix, "prefix of the Node annotations (--kube-subnet-mgr)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig-file", "", "kubeconfig for the Kubernetes API (--kube-subnet-mgr); empty: the pod's service account (in-cluster)")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	fs.StringVar(&c.HealthzIP, "healthz-ip", "0.0.0.0", "address of /healthz, /readyz and /metrics")
	fs.IntVar(&c.HealthzPort, "healthz-port", 0, "port of /healthz, /readyz and /metrics; 0 disables them")
	fs.IntVar(&c.IPTablesResync, "iptables-resync", 5, "re-apply the host rules (and --ip-blackhole-route's routes) every this many seconds")
	fs.BoolVar(&c.ForwardRules, "iptables-forward-rules", true, "accept forwarded traffic of the cluster network (chain FLANNEL-FWD)")
	fs.BoolVar(&c.BlackholeRoute, "ip-blackhole-route", false, "add a blackhole route for each of the node's own subnets (for a pod network without a bridge, as Canal's)")
	fs.StringVar(&c.NetConfigPath, "net-config-path", "/etc/kube-flannel/net-conf.json", "network config JSON file (--kube-subnet-mgr)")
	fs.BoolVar(&c.SetNodeNetworkUnavailable, "set-node-network-unavailable", true, "set the Node's NetworkUnavailable condition False once its lease is published (--kube-subnet-mgr)")
	fs.IntVar(&c.Verbosity, "v", 0, "log verbosity, as flanneld's (klog's): 1 and above log at debug level, unless --log-level is given")
	fs.StringVar(&c.VModule, "vmodule", "", "flanneld's per-source-file verbosity; subnetd refuses a non-empty one: use -v or --log-level")
	fs.StringVar(&c.BacktraceAt, "log_backtrace_at", "", "flanneld's stack trace at a line of its source; subnetd refuses a non-empty one")

	// subnetd's own.
	fs.BoolVar(&c.NoRandomFully, oldRandomFully, false, "deprecated spelling of --ip-masq-fully-random-disable")
	fs.DurationVar(&c.EtcdTimeout, "etcd-timeout", 5*time.Second, "deadline of each etcd call (with --kube-subnet-mgr: of each Kubernetes API call)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 24*time.Hour, "time to live of the lease in etcd")
	fs.StringVar(&c.NetConfig, "net-config", "", "network config JSON file, stored in etcd when etcd has none")
	fs.StringVar(&c.DataDir, "data-dir", "/var/lib/subnetd", "node identity, embedded etcd data and the lock that lets one subnetd run per node")
	fs.StringVar(&c.NodeID, "node-id", "", "stable node identity; default: persisted in --data-dir, first taken from /etc/machine-id")
	fs.DurationVar(&c.CheckInterval, "check-interval", 10*time.Second, "how often the lease, etcd and the data plane are checked")
	fs.DurationVar(&c.ResyncInterval, "resync-interval", subnet.DefaultResync, "how often every lease is listed from etcd again although the watch is healthy, repairing events an etcd lost (etcd before 3.4.31 and 3.5.13 can lose them at a compaction)")
	fs.BoolVar(&c.Cleanup, "cleanup", false, "remove every device, route, rule and file subnetd made on this node, then exit (refused while a subnetd runs with the same --data-dir)")
	fs.BoolVar(&c.ReleaseOnExit, "release-on-exit", false, "on shutdown give the lease up and remove the data plane")
	fs.StringVar(&c.EmbeddedClient, "embedded-etcd-client", "127.0.0.1:2379", "loopback address the embedded etcd serves clients at")
	fs.StringVar(&c.EmbeddedPeer, "embedded-etcd-peer", "127.0.0.1:2380", "loopback address of the embedded etcd's peer port")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text (logfmt) or json (one object per line, for log shippers)")
}

// stringList is a flag that may be given many times, each adding a value,
// as flanneld's --iface and --iface-regex.
type stringList []string

func (l *stringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// envPrefix is flanneld's: every flag is also read from FLANNELD_<FLAG>.
const envPrefix = "FLANNELD"

// envName is the variable of a flag, as flanneld's flagutil names it: the
// name upper-cased, dashes turned to underscores, after FLANNELD_.
func envName(flagName string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// errFlagSyntax is a command line the flag package refused, and printed
// why with the usage.
var errFlagSyntax = errors.New("unparsable command line")

// parseCommandLine reads args as flanneld does, then, as its flagutil, sets
// every flag not given there from its FLANNELD_ variable read through
// getenv (an empty one counts as unset). --version is read before the
// variables, as flanneld's. A variable's bad value is refused naming it
// (flanneld logs it and goes on without it). -v maps onto --log-level.
func parseCommandLine(args []string, getenv func(string) string, output io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("subnetd", flag.ContinueOnError)
	fs.SetOutput(output)
	c.flags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errFlagSyntax, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: subnetd takes only flags", fs.Args())
	}
	if c.Version {
		return c, nil
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given[oldRandomFully] {
		given["ip-masq-fully-random-disable"] = true
		c.deprecated = append(c.deprecated, "--"+oldRandomFully+" is deprecated: use flanneld's spelling, --ip-masq-fully-random-disable")
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		v := getenv(name)
		if given[f.Name] || f.Name == oldRandomFully || f.Name == "version" || v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q (for --%s): %w", name, v, f.Name, err))
		}
		given[f.Name] = true
	})
	if c.Verbosity > 0 && !given["log-level"] {
		c.LogLevel = "debug"
	}
	return c, errors.Join(errs...)
}

// Validate checks the flags before anything is started.
func (c *Config) Validate() error {
	var errs []error
	if c.LeaseTTL < time.Minute {
		errs = append(errs, fmt.Errorf("--lease-ttl %v is too short; use at least 1m", c.LeaseTTL))
	}
	if m := time.Duration(c.RenewMargin) * time.Minute; m <= 0 || m >= c.LeaseTTL {
		errs = append(errs, fmt.Errorf("--subnet-lease-renew-margin %d minutes must be above 0 and below --lease-ttl %v", c.RenewMargin, c.LeaseTTL))
	}
	if c.EtcdTimeout < 100*time.Millisecond || c.CheckInterval < 100*time.Millisecond || c.ResyncInterval < 100*time.Millisecond {
		errs = append(errs, errors.New("--etcd-timeout, --check-interval and --resync-interval must be at least 100ms"))
	}
	if c.HealthzPort < 0 || c.HealthzPort > 65535 {
		errs = append(errs, fmt.Errorf("--healthz-port %d is out of range", c.HealthzPort))
	}
	if _, err := netip.ParseAddr(c.HealthzIP); err != nil {
		errs = append(errs, fmt.Errorf("--healthz-ip: %w", err))
	}
	errs = append(errs, c.validateInterface(), c.validateFlanneld())
	if c.EtcdEndpoints == "" {
		for _, a := range []string{c.EmbeddedClient, c.EmbeddedPeer} {
			if ap, err := netip.ParseAddrPort(a); err != nil || !ap.Addr().IsLoopback() {
				errs = append(errs, fmt.Errorf("embedded etcd address %q: want a loopback ADDRESS:PORT, as it must not be reachable from other hosts", a))
			}
		}
	}
	if c.SubnetFile == "" || c.DataDir == "" {
		errs = append(errs, errors.New("--subnet-file and --data-dir must not be empty"))
	}
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		errs = append(errs, errors.New("give both --etcd-certfile and --etcd-keyfile, or neither"))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.LogLevel))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: use text or json", c.LogFormat))
	}
	for _, e := range c.endpoints() {
		if err := checkEndpoint(e); err != nil {
			errs = append(errs, err)
		}
	}
	if c.NodeID != "" && strings.ContainsAny(c.NodeID, " \t\n") {
		errs = append(errs, fmt.Errorf("--node-id %q must not contain blanks", c.NodeID))
	}
	if c.KubeSubnetMgr && kubeMode != nil {
		errs = append(errs, kubeMode.validate(c))
	}
	return errors.Join(errs...)
}

// validateInterface checks the flags that choose the overlay's interface
// and addresses. A regular expression that does not compile is refused
// (flanneld logs it and tries the next).
func (c *Config) validateInterface() error {
	var errs []error
	if c.PublicIP != "" {
		if _, err := netip.ParseAddr(c.PublicIP); err != nil {
			errs = append(errs, fmt.Errorf("--public-ip: %w", err))
		}
	}
	if c.PublicIPv6 != "" {
		if ip, err := netip.ParseAddr(c.PublicIPv6); err != nil || !ip.Is6() {
			errs = append(errs, fmt.Errorf("--public-ipv6 %q: want an IPv6 address", c.PublicIPv6))
		}
	}
	for _, re := range c.IfaceRegex {
		if _, err := regexp.Compile(re); err != nil {
			errs = append(errs, fmt.Errorf("--iface-regex: %w", err))
		}
	}
	if c.IfaceCanReach != "" {
		if _, err := netip.ParseAddr(c.IfaceCanReach); err != nil {
			errs = append(errs, fmt.Errorf("--iface-can-reach %q: want an address, the interface is that of the route to it", c.IfaceCanReach))
		}
	}
	return errors.Join(errs...)
}

// validateFlanneld checks flanneld's flags that subnetd's own do not
// cover, and refuses the two it cannot honour.
func (c *Config) validateFlanneld() error {
	var errs []error
	if c.IPTablesResync < 1 {
		errs = append(errs, fmt.Errorf("--iptables-resync %d: want at least 1 (seconds)", c.IPTablesResync))
	}
	if c.VModule != "" {
		errs = append(errs, fmt.Errorf("--vmodule %q: subnetd cannot honour it, as it sets the verbosity of flanneld's own source files; use -v or --log-level", c.VModule))
	}
	if c.BacktraceAt != "" {
		errs = append(errs, fmt.Errorf("--log_backtrace_at %q: subnetd cannot honour it, as it names a line of flanneld's own source; drop it", c.BacktraceAt))
	}
	return errors.Join(errs...)
}

// checkEndpoint rejects an etcd endpoint the client would retry forever
// without saying why: it must be an http(s) URL with a host and port
// (or a unix socket), as flanneld's --etcd-endpoints, or a bare HOST:PORT,
// which the etcd client also takes.
func checkEndpoint(e string) error {
	if !strings.Contains(e, "://") {
		if host, _, err := net.SplitHostPort(e); err != nil || host == "" {
			return fmt.Errorf("--etcd-endpoints %q: want a URL like http://HOST:2379", e)
		}
		return nil
	}
	u, err := url.Parse(e)
	if err != nil {
		return fmt.Errorf("--etcd-endpoints %q: %w", e, err)
	}
	switch u.Scheme {
	case "http", "https":
		if _, _, err := net.SplitHostPort(u.Host); err != nil || u.Hostname() == "" {
			return fmt.Errorf("--etcd-endpoints %q: want a URL like http://HOST:2379", e)
		}
	case "unix", "unixs":
	default:
		return fmt.Errorf("--etcd-endpoints %q: want a URL like http://HOST:2379 or https://HOST:2379", e)
	}
	return nil
}

func (c *Config) endpoints() []string {
	var out []string
	for _, e := range strings.Split(c.EtcdEndpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
