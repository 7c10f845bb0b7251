package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// outcome is everything one run measured.
type outcome struct {
	scenarios []scenarioResult
	bins      []binResult
	rows      []row
	errs      []error // of the lease daemons' bench and the data plane
}

// run builds both sides, measures every scenario and the binaries, prints
// the table and, when asked, updates the markdown file. It fails when a
// scenario failed or our side leaked; missed targets are reported, not
// errors.
func run(ctx context.Context, cfg config) error {
	var err error
	if cfg.rssTool, err = checkHost(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "cnibench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	var sides [2]side
	if needsPlugins(cfg) {
		if sides, err = buildSides(ctx, cfg, work); err != nil {
			return err
		}
		if cfg.tools, err = buildTools(ctx, cfg, filepath.Join(work, "tools")); err != nil {
			return err
		}
	}
	m := describeMachine()
	out, err := measureAll(ctx, cfg, sides, work)
	if err != nil {
		return err
	}
	m.loadEnd = loadAverage()
	fmt.Println()
	fmt.Print(m.text(cfg))
	if err := writeText(os.Stdout, out.rows); err != nil {
		return err
	}
	if cfg.markdown != "" {
		if err := updateMarkdown(cfg.markdown, m.markdown(cfg, out.rows)); err != nil {
			return fmt.Errorf("writing %s: %w", cfg.markdown, err)
		}
		fmt.Printf("\nwrote the results into %s\n", cfg.markdown)
	}
	return out.failures()
}

// noScenario is an -only that no scenario's name contains.
const noScenario = "\x00none"

// needsPlugins says whether a scenario, the CRI rows or the start-up figures
// will run plugins, which must then be built.
func needsPlugins(cfg config) bool {
	return cfg.startupN > 0 || cfg.criPods > 0 || slices.ContainsFunc(scenarios(), cfg.selects)
}

// selects says whether -only lets the scenario run.
func (c config) selects(sc scenario) bool { return strings.Contains(sc.name, c.only) }

// buildSides builds (or finds) the reference plugins and ours.
func buildSides(ctx context.Context, cfg config, work string) ([2]side, error) {
	ref := side{name: "reference", dir: cfg.refDir}
	ours := side{name: "ours", dir: filepath.Join(work, "ours")}
	if ref.dir == "" {
		ref.dir = filepath.Join(work, "reference")
		slog.Info("building the reference plugins", "version", cfg.refVersion)
		if err := buildRef(ctx, cfg.refVersion, ref.dir); err != nil {
			return [2]side{}, err
		}
	}
	if cfg.oursDir != "" {
		ours.dir = cfg.oursDir
		return [2]side{ref, ours}, nil
	}
	slog.Info("building our plugins", "repo", cfg.repo)
	return [2]side{ref, ours}, buildOurs(ctx, cfg.repo, ours.dir)
}

// measureAll runs every scenario, then the start-up figures.
func measureAll(ctx context.Context, cfg config, sides [2]side, work string) (outcome, error) {
	var out outcome
	settler := newNetnsSettler(cfg.settle)
	for i, sc := range scenarios() {
		if !cfg.selects(sc) {
			continue
		}
		settler.wait(ctx)
		slog.Info("scenario", "name", sc.name)
		res := runScenario(ctx, cfg, i, sc, sides, work)
		if ctx.Err() != nil {
			return out, fmt.Errorf("interrupted; every namespace was deleted: %w", ctx.Err())
		}
		out.scenarios = append(out.scenarios, res)
		out.rows = append(out.rows, scenarioRows(res)...)
	}
	phases := []struct {
		on  bool
		run func()
	}{
		{cfg.leaseEvents > 0, func() { out.add(daemonBench(ctx, cfg, work)) }},
		{cfg.kubeEvents > 0, func() { out.add(kubeBench(ctx, cfg, work)) }},
		{cfg.criPods > 0, func() { out.add(criBench(ctx, cfg, sides, work)) }},
		{cfg.dpRuns > 0, func() {
			slog.Info("data plane", "runs", cfg.dpRuns, "seconds", cfg.dpSeconds)
			out.add(dataPlane(ctx, cfg, work))
		}},
	}
	for _, ph := range phases {
		if ph.on {
			settler.wait(ctx)
			ph.run()
		}
	}
	if cfg.startupN == 0 {
		return out, nil
	}
	settler.wait(ctx)
	slog.Info("start-up", "invocations", cfg.startupN)
	bins, err := startup(ctx, sides, cfg.startupN, cfg.rssTool)
	if err != nil {
		return out, err
	}
	out.bins = bins
	out.rows = append(out.rows, binaryRows(bins)...)
	return out, nil
}

// failures joins the errors of failed scenarios and our leaks.
func (o outcome) failures() error {
	errs := o.errs
	for _, s := range o.scenarios {
		if s.err != nil {
			errs = append(errs, s.err)
		}
		if l := s.leaks[1]; l.total() != 0 {
			errs = append(errs, fmt.Errorf("%s: our plugins left %s (reservations+links+rules) behind", s.sc.name, l))
		}
	}
	return errors.Join(errs...)
}

// machine describes where and when the figures were taken.
type machine struct {
	date, cpu, kernel, goVersion, commit string
	nproc                                int
	loadStart, loadEnd                   string
}

func describeMachine() machine {
	m := machine{date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), nproc: runtime.NumCPU(),
		goVersion: runtime.Version(), loadStart: loadAverage(), cpu: cpuModel(), commit: gitCommit()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.kernel = unix.ByteSliceToString(u.Release[:])
	}
	return m
}

func cpuModel() string {
	raw, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAverage is the 1-minute load: other jobs on a shared machine show here.
func loadAverage() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(raw)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// gitCommit names the tree that was built as "ours".
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown commit"
	}
	c := strings.TrimSpace(string(out))
	if st, _ := exec.Command("git", "status", "--porcelain", "--", "plugins", "pkg").Output(); len(bytes.TrimSpace(st)) > 0 {
		c += " with uncommitted changes in plugins/ or pkg/"
	}
	return c
}

func (m machine) facts(cfg config) []string {
	f := []string{
		"command: `" + cfg.command + "`, which runs `go run ./bench " + strings.Join(os.Args[1:], " ") + "`",
		"date: " + m.date,
		fmt.Sprintf("machine: %d CPUs (%s), kernel %s, %s; 1-min load %s at the start, %s at the end",
			m.nproc, m.cpu, m.kernel, m.goVersion, m.loadStart, m.loadEnd),
		fmt.Sprintf("reference: %s %s%s; ours: %s%s; both built static (CGO_ENABLED=0, as the reference releases are) with -trimpath by the same toolchain",
			refModule, cfg.refVersion, prebuilt(cfg.refDir), m.commit, prebuilt(cfg.oursDir)),
	}
	if cfg.uses(driverLibcni) {
		f = append(f, fmt.Sprintf("libcni in-process: sequential: %d pods per side, ADD all, CHECK all, DEL all, alternating sides pod by pod "+
			"(the floor program in a third node taking turns with them, in the scenarios with rows vs floor); "+
			"concurrent: %d pods, %d at a time, ADD then DEL, %d rounds per side in ABBA order",
			cfg.pods, cfg.concPods, cfg.workers, cfg.rounds))
	}
	if cfg.uses(driverCnitool) {
		f = append(f, fmt.Sprintf("cnitool (%s of go.mod's libcni, one process per verb): %d pods per side, ADD all, DEL all, alternating sides pod by pod",
			cnitoolPkg, cfg.cnitoolPods))
	}
	if cfg.startupN > 0 {
		f = append(f, fmt.Sprintf("start-up: %d VERSION runs per binary", cfg.startupN))
	}
	if cfg.kubeEvents > 0 {
		f = append(f, fmt.Sprintf("Kubernetes API: %d new Nodes one at a time, starts with %v Nodes in the API; "+
			"kube-apiserver of test/kube's pinned release, its etcd without fsync", cfg.kubeEvents, cfg.kubeNodes))
	}
	return f
}

// prebuilt notes binaries the bench did not build itself.
func prebuilt(dir string) string {
	if dir == "" {
		return ""
	}
	return " (prebuilt, from " + dir + ")"
}

func (m machine) text(cfg config) string {
	return strings.Join(m.facts(cfg), "\n") + "\n\n"
}

// markdown is the generated block of BENCHMARKS.md.
func (m machine) markdown(cfg config, rows []row) string {
	var b strings.Builder
	for _, f := range m.facts(cfg) {
		b.WriteString("- " + f + "\n")
	}
	b.WriteString("\nRatios are ours / reference: below 1 is better for times and sizes, above 1 for pods/s. " +
		"Leaks are reservations+links+rules left after every pod was deleted. " +
		"Rows \"(cnitool)\" run each verb as a cnitool process; rows \"vs floor\" have the floor program (bench/floor) " +
		"in the reference column and compare ours (libcni) with it.\n\n")
	b.WriteString(markdownTable(rows))
	b.WriteString("\nConfigurations:\n\n")
	for _, sc := range scenarios() {
		b.WriteString("- " + sc.name + ": " + sc.about)
		if sc.noCheck != "" {
			b.WriteString("; CHECK not measured: " + sc.noCheck)
		}
		if sc.noConcurrent != "" {
			b.WriteString("; no concurrent phase: " + sc.noConcurrent)
		}
		b.WriteString("\n")
	}
	return b.String()
}
