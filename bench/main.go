// Command cnibench measures the suite's plugins side by side with the
// reference plugins (containernetworking/plugins) on this machine, in one
// run, and prints the ratios ours/reference: `make bench`.
//
// Both sides get the same scenarios, the same harness and the same
// configurations: each scenario runs in a fresh "node" network namespace per
// side, pods are namespaces attached to it, and the plugins run inside the
// node through libcni in-process, as containerd runs them, and through one
// cnitool process per verb, as an operator runs them. Operations alternate
// between the sides so that drift on this shared machine hits both. Nothing
// touches the machine's own network, /var/lib/cni or /etc/cni.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// config says how much to measure and where the binaries come from.
type config struct {
	pods       int    // pods per side for the sequential latencies
	concPods   int    // pods per side and round for the concurrent throughput
	workers    int    // pods in flight at once in the concurrent phase
	rounds     int    // concurrent rounds per side, in ABBA order
	startupN   int    // VERSION invocations per binary and side
	refVersion string // containernetworking/plugins release to compare with
	refDir     string // prebuilt reference plugins instead of building them
	oursDir    string // prebuilt plugins of ours, e.g. to compare a change with the last commit
	repo       string // the suite's module root, built into the "ours" side
	markdown   string // BENCHMARKS.md to update; "" leaves files alone
	command    string // how the run was started, for the report
	only       string // measure only the scenarios whose name contains this
	rssTool    string // GNU time, found at the start of the run
	// The lease daemons' bench; leaseEvents 0 leaves it out.
	leaseEvents    int    // new leases timed one by one
	peerCounts     []int  // peers in etcd before a node starts
	flannelVersion string // flanneld release to compare with; "" compares subnetd with itself
	dpRuns         int    // data plane: iperf3 runs per path, alternating; 0 skips it
	dpSeconds      int    // data plane: seconds per iperf3 run
	// The lease daemons on the Kubernetes API; kubeEvents 0 leaves it out.
	kubeEvents int   // new Nodes timed one by one
	kubeNodes  []int // Nodes in the API before a daemon starts, ascending
	// The plugins under containerd's CRI; 0 leaves it out.
	criPods int // pod sandboxes per side
	// How the scenarios run the plugins (driverLibcni, driverCnitool).
	drivers     []string
	cnitoolPods int   // pods per side for the cnitool driver's ADD/DEL latencies
	tools       tools // built by run: cnitool and the floor program
	// settle waits for the kernel's teardown of the namespaces deleted
	// before each scenario and phase (netnsSettler); the smoke test, which
	// times nothing, runs without it.
	settle bool
}

// The drivers: how a runtime runs the plugins.
const (
	driverLibcni  = "libcni"  // libcni in-process, as containerd's go-cni
	driverCnitool = "cnitool" // one cnitool process per verb
)

// uses says whether the scenarios run through the driver.
func (c config) uses(driver string) bool { return slices.Contains(c.drivers, driver) }

// parseDrivers reads "libcni,cnitool".
func parseDrivers(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		d := strings.TrimSpace(f)
		if d != driverLibcni && d != driverCnitool {
			return nil, fmt.Errorf("%q is not a driver: give %s, %s or both, comma-separated", f, driverLibcni, driverCnitool)
		}
		out = append(out, d)
	}
	return out, nil
}

func defaultConfig() config {
	return config{pods: 60, concPods: 100, workers: 8, rounds: 2, startupN: 100,
		refVersion: "v1.9.1", repo: ".", command: "make bench",
		leaseEvents: 40, peerCounts: []int{1000, 2000}, flannelVersion: "v0.28.10",
		dpRuns: 3, dpSeconds: 3, kubeEvents: 40, kubeNodes: []int{1000, 5000}, criPods: 40,
		drivers: []string{driverLibcni, driverCnitool}, cnitoolPods: 30, settle: true}
}

func main() {
	cfg := defaultConfig()
	flag.IntVar(&cfg.pods, "pods", cfg.pods, "pods per side for the sequential ADD/CHECK/DEL latencies")
	flag.IntVar(&cfg.concPods, "conc-pods", cfg.concPods, "pods per side and round for the concurrent throughput")
	flag.IntVar(&cfg.workers, "workers", cfg.workers, "pods in flight at once in the concurrent phase")
	flag.IntVar(&cfg.rounds, "rounds", cfg.rounds, "concurrent rounds per side (alternating which side goes first)")
	flag.IntVar(&cfg.startupN, "startup", cfg.startupN, "VERSION invocations per binary and side")
	flag.StringVar(&cfg.refVersion, "ref-version", cfg.refVersion, "containernetworking/plugins release to compare with")
	flag.StringVar(&cfg.refDir, "ref-dir", "", "directory of prebuilt reference plugins (default: build them from the Go module proxy)")
	flag.StringVar(&cfg.oursDir, "ours-dir", "", "directory of prebuilt plugins to measure as \"ours\" (default: build ./plugins/... of -repo)")
	flag.StringVar(&cfg.repo, "repo", cfg.repo, "root of this module, whose ./plugins/... are built as \"ours\"")
	flag.StringVar(&cfg.markdown, "md", "", "update the results section of this markdown file (e.g. BENCHMARKS.md)")
	flag.IntVar(&cfg.leaseEvents, "lease-events", cfg.leaseEvents, "new leases timed one by one in the lease daemons' bench; 0 skips it")
	flag.StringVar(&cfg.flannelVersion, "flannel-version", cfg.flannelVersion, "flanneld release the lease daemons' bench compares subnetd with")
	flag.IntVar(&cfg.dpRuns, "dp-runs", cfg.dpRuns, "data plane: iperf3 runs per path (overlay, hand-made vxlan, underlay); 0 skips it")
	flag.IntVar(&cfg.dpSeconds, "dp-seconds", cfg.dpSeconds, "data plane: seconds per iperf3 run")
	flag.StringVar(&cfg.only, "only", "", "measure only the scenarios whose name contains this (with -lease-events 0 -dp-runs 0 -startup 0: one chain alone)")
	flag.IntVar(&cfg.kubeEvents, "kube-events", cfg.kubeEvents, "new Nodes timed one by one in the Kubernetes API mode's bench; 0 skips it")
	flag.Func("kube-nodes", "Nodes in the API before each daemon start, comma-separated, ascending (default 1000,5000)", func(s string) (err error) {
		cfg.kubeNodes, err = parseCounts(s)
		return err
	})
	flag.IntVar(&cfg.criPods, "cri-pods", cfg.criPods, "pod sandboxes per side run, stopped and removed through containerd's CRI; 0 skips it")
	flag.Func("drivers", "how the scenarios run the plugins, comma-separated: libcni (in-process, as containerd), cnitool (a process per verb) (default libcni,cnitool)", func(s string) (err error) {
		cfg.drivers, err = parseDrivers(s)
		return err
	})
	flag.IntVar(&cfg.cnitoolPods, "cnitool-pods", cfg.cnitoolPods, "pods per side for the cnitool driver's sequential ADD/DEL latencies")
	kubeOnly := flag.Bool("kube-only", false, "measure only the lease daemons on the Kubernetes API (no plugin, etcd or data plane rows)")
	flag.StringVar(&cfg.command, "command", cfg.command, "the command line to record in the report")
	flag.Parse()
	if *kubeOnly {
		cfg.only, cfg.leaseEvents, cfg.dpRuns, cfg.startupN, cfg.criPods = noScenario, 0, 0, 0, 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		stop()
		os.Exit(1)
	}
}

// parseCounts reads "1000,5000": positive, ascending.
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	if !slices.IsSorted(out) {
		return nil, fmt.Errorf("%s: give the counts in ascending order (the Nodes of each are kept for the next)", s)
	}
	return out, nil
}
