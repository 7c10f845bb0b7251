package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// sideRun is one side's node in one scenario: its namespaces, its chain
// and what the leak count compares with.
type sideRun struct {
	side        side
	node        *namespace
	pods        []*namespace
	chain       *chain
	tool        *cnitoolRun // nil without the cnitool driver
	dataDir     string
	linksBefore []string // the node's links before the first ADD
	rulesBase   ruleset  // the node's rules after the warm-up pod came and went
	device      bool     // the scenario's pods each take a node device (podDevice)
}

// doFunc runs one verb for one pod and returns its time.
type doFunc = func(ctx context.Context, v verb, pod int) (time.Duration, error)

// hooked is do with the scenario's per-pod device hooks, if it has them.
func (s *sideRun) hooked(do doFunc) doFunc {
	if !s.device {
		return do
	}
	return podDevice(s.node, do)
}

func (s *sideRun) id(pod int) string { return fmt.Sprintf("cnibench-%s-%d", s.side.name, pod) }

// warmID names the warm-up pod, which pays for first-use costs (page cache,
// the shared chains) outside the figures.
func (s *sideRun) warmID() string { return "cnibench-" + s.side.name + "-warm" }

func (s *sideRun) do(ctx context.Context, v verb, pod int) (time.Duration, error) {
	return s.hooked(func(ctx context.Context, v verb, pod int) (time.Duration, error) {
		return s.chain.do(ctx, v, s.pods[pod], pod, s.id(pod))
	})(ctx, v, pod)
}

// ids lists every container ID the scenario used on this side, cnitool's
// included.
func (s *sideRun) ids() []string {
	ids := []string{s.warmID()}
	for i, p := range s.pods {
		ids = append(ids, s.id(i), cnitoolID(p.path))
	}
	return ids
}

// libcni is the side in the libcni driver's sequential phase.
func (s *sideRun) libcni(verbs []verb) participant {
	return participant{name: s.side.name, verbs: verbs, do: s.do}
}

// addNode creates a node namespace and n pod namespaces.
func addNode(ctx context.Context, nss *namespaces, tag string, n int) (*namespace, []*namespace, error) {
	node, err := nss.add(ctx, tag+"-node")
	if err != nil {
		return nil, nil, err
	}
	var pods []*namespace
	for i := range n {
		p, err := nss.add(ctx, fmt.Sprintf("%s-%d", tag, i))
		if err != nil {
			return nil, nil, err
		}
		pods = append(pods, p)
	}
	return node, pods, nil
}

// prepare creates the side's node and pods, runs the scenario's setup and a
// warm-up pod, and records the state the leak count compares with.
func prepare(ctx context.Context, nss *namespaces, sc scenario, sd side, tag string, pods int, cfg config, work string) (*sideRun, error) {
	s := &sideRun{side: sd, dataDir: filepath.Join(work, "data"), device: sc.device}
	var err error
	if s.node, s.pods, err = addNode(ctx, nss, tag, pods); err != nil {
		return nil, err
	}
	if sc.setup != nil {
		if err := sc.setup(ctx, s.node, sd, s.dataDir); err != nil {
			return nil, err
		}
	}
	if s.linksBefore, err = s.node.linkNames(); err != nil {
		return nil, err
	}
	confOf := sc.conf
	if sd.name == "ours" && sc.oursConf != nil {
		confOf = sc.oursConf
	}
	conf, err := confOf(cfg.repo, s.dataDir)
	if err != nil {
		return nil, err
	}
	if err := prefillReservations(s.dataDir, conf, sc.prefill); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(conf)
	if err != nil {
		return nil, err
	}
	if s.chain, err = newChain(sd, s.node, raw, filepath.Join(work, "cache"), sc.capArgs); err != nil {
		return nil, err
	}
	if cfg.uses(driverCnitool) {
		tc := cnitoolConf{bin: cfg.tools.cnitool, side: sd, conf: raw, network: s.chain.list.Name, capArgs: sc.capArgs}
		if s.tool, err = newCnitoolRun(tc, s.node, s.pods, filepath.Join(work, "cnitool")); err != nil {
			return nil, err
		}
	}
	if err := s.warmUp(ctx); err != nil {
		return nil, err
	}
	s.rulesBase, err = readRules(ctx, s.node)
	return s, err
}

func (s *sideRun) warmUp(ctx context.Context) error {
	do := s.hooked(func(ctx context.Context, v verb, pod int) (time.Duration, error) {
		return s.chain.do(ctx, v, s.pods[pod], pod, s.warmID())
	})
	for _, v := range []verb{verbAdd, verbDel} {
		if _, err := do(ctx, v, 0); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	return nil
}

// leaks counts what is left now that every pod is deleted.
func (s *sideRun) leaks(ctx context.Context, shared []string) (leaks, error) {
	var l leaks
	var err error
	if l.reservations, err = countReservations(s.dataDir); err != nil {
		return l, err
	}
	if l.links, err = leakedLinks(s.node, s.linksBefore, shared, s.pods); err != nil {
		return l, err
	}
	now, err := readRules(ctx, s.node)
	if err != nil {
		return l, err
	}
	l.rules = leakedRules(s.rulesBase, now, s.ids())
	return l, nil
}

// order is the turn of n participants at step i: a rotation, so that each
// goes first as often and drift hits all.
func order(i, n int) []int {
	o := make([]int, n)
	for j := range o {
		o[j] = (i + j) % n
	}
	return o
}

// participant is one column of a sequential phase: a side through a driver,
// or the floor program.
type participant struct {
	name  string
	verbs []verb // the verbs it runs; the phase skips it for others
	do    doFunc
}

// warmUp ADDs and DELs pod 0 outside the figures: page cache, first use.
func (p participant) warmUp(ctx context.Context) error {
	for _, v := range []verb{verbAdd, verbDel} {
		if _, err := p.do(ctx, v, 0); err != nil {
			return fmt.Errorf("%s: warm-up: %w", p.name, err)
		}
	}
	return nil
}

// sequential ADDs every pod, then CHECKs every pod, then DELs every pod,
// one at a time, taking turns pod by pod; durations in ms, per participant.
// Each operation starts after a random pause of up to two jiffies (jitter):
// taking turns in a fixed order at a steady pace would put each participant
// at its own steady phase of the kernel's timer tick, and the RCU grace
// periods a link deletion waits for end on ticks, so one side's DELs took a
// whole jiffy (4 ms at HZ 250) more than the other's, run after run, and
// which side that was changed between runs.
func sequential(ctx context.Context, parts []participant, pods int, verbs []verb) ([]map[verb][]float64, error) {
	ms := make([]map[verb][]float64, len(parts))
	for k := range ms {
		ms[k] = map[verb][]float64{}
	}
	for _, v := range verbs {
		for i := range pods {
			for _, k := range order(i, len(parts)) {
				if !slices.Contains(parts[k].verbs, v) {
					continue
				}
				time.Sleep(jitter())
				d, err := parts[k].do(ctx, v, i)
				if err != nil {
					return ms, fmt.Errorf("%s: %w", parts[k].name, err)
				}
				ms[k][v] = append(ms[k][v], float64(d.Microseconds())/1000)
			}
		}
	}
	return ms, nil
}

// jitter is a random pause of up to two jiffies at HZ 250 (sequential).
func jitter() time.Duration { return rand.N(8 * time.Millisecond) }

// rssPods is how many pods the memory pass takes per side: peak RSS
// hardly varies between invocations.
const rssPods = 10

// memory runs ADD, CHECK and DEL of pods 0..n-1 with every top-level plugin
// invocation under GNU time, alternating the sides, and returns the peak RSS
// of each invocation in KiB. It is a pass of its own so that the wrapper
// stays out of the timings.
func memory(ctx context.Context, runs [2]*sideRun, n int, tool string, verbs []verb) ([2][]float64, error) {
	var rss [2][]float64
	for _, r := range runs {
		r.chain.rec.setRSSTool(tool)
		defer r.chain.rec.setRSSTool("")
	}
	for i := range n {
		for _, k := range order(i, len(runs)) {
			for _, v := range verbs {
				if _, err := runs[k].do(ctx, v, i); err != nil {
					return rss, fmt.Errorf("%s, measuring memory: %w", runs[k].side.name, err)
				}
			}
		}
	}
	for k, r := range runs {
		rss[k] = r.chain.rec.takeRSS()
	}
	return rss, nil
}

// throughput is the concurrent phase's outcome on one side.
type throughput struct {
	pods     int
	add, del time.Duration
}

// concurrent ADDs then DELs cfg.concPods pods, cfg.workers at a time, for
// cfg.rounds rounds per side in ABBA order.
func concurrent(ctx context.Context, runs [2]*sideRun, cfg config) ([2]throughput, error) {
	var res [2]throughput
	for r := range cfg.rounds {
		for _, k := range order(r, len(runs)) {
			add, err := runs[k].parallel(ctx, verbAdd, cfg.concPods, cfg.workers)
			if err != nil {
				return res, err
			}
			del, err := runs[k].parallel(ctx, verbDel, cfg.concPods, cfg.workers)
			if err != nil {
				return res, err
			}
			res[k].pods += cfg.concPods
			res[k].add += add
			res[k].del += del
		}
	}
	return res, nil
}

// parallel runs verb for pods 0..n-1 with at most workers in flight and
// returns the wall time of the whole batch.
func (s *sideRun) parallel(ctx context.Context, v verb, n, workers int) (time.Duration, error) {
	next := make(chan int)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := range next {
				if _, err := s.do(ctx, v, i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	took := time.Since(start)
	if len(errs) > 0 {
		return took, fmt.Errorf("%s: %d of %d concurrent %s failed, the first: %w", s.side.name, len(errs), n, v, errs[0])
	}
	return took, nil
}

// scenarioResult holds one scenario's figures for both sides (index 0 is the
// reference, 1 ours); a driver that did not run leaves its maps nil.
type scenarioResult struct {
	sc      scenario
	skipped string // why it did not run
	err     error
	seq     [2]map[verb][]float64 // the libcni driver's sequential phase
	floor   map[verb][]float64    // the floor program, taking turns with seq
	tool    [2]map[verb][]float64 // the cnitool driver
	rss     [2][]float64          // KiB per top-level plugin invocation, from the memory pass
	conc    [2]throughput
	leaks   [2]leaks
}

// runScenario measures one scenario on both sides, each in its own fresh
// node namespace, and deletes every namespace it made before returning.
func runScenario(ctx context.Context, cfg config, idx int, sc scenario, sides [2]side, work string) (res scenarioResult) {
	res.sc = sc
	for _, sd := range sides {
		if !sd.has(sc.bins...) {
			res.skipped = fmt.Sprintf("the %s side has no %v binaries", sd.name, sc.bins)
			return res
		}
	}
	nss := &namespaces{}
	defer func() {
		if err := nss.deleteAll(); err != nil {
			res.err = errors.Join(res.err, err)
		}
	}()
	ctx, cancel := context.WithCancel(ctx) // ends the servers a setup started, before their namespaces go
	defer cancel()
	var runs [2]*sideRun
	tag := func(c byte) string { return fmt.Sprintf("cnib%d-%d%c", os.Getpid(), idx, c) }
	for k, sd := range sides {
		dir := filepath.Join(work, fmt.Sprintf("s%d-%s", idx, sd.name))
		r, err := prepare(ctx, nss, sc, sd, tag(sd.name[0]), podsNeeded(cfg), cfg, dir)
		if err != nil {
			res.err = fmt.Errorf("%s: preparing the %s side: %w", sc.name, sd.name, err)
			return res
		}
		runs[k] = r
	}
	var floor *floorRun
	if sc.floor != nil && cfg.tools.floor != "" {
		var err error
		if floor, err = prepareFloor(ctx, nss, *sc.floor, tag('f'), cfg.pods, cfg.tools.floor); err != nil {
			res.err = fmt.Errorf("%s: preparing the floor: %w", sc.name, err)
			return res
		}
	}
	res.err = measureScenario(ctx, cfg, runs, floor, &res)
	return res
}

// podsNeeded is how many pods each side's node gets: enough for every
// phase of the drivers in use, and the warm-up pod.
func podsNeeded(cfg config) int {
	n := 1
	if cfg.uses(driverLibcni) {
		n = max(n, cfg.pods, cfg.concPods)
	}
	if cfg.uses(driverCnitool) {
		n = max(n, cfg.cnitoolPods)
	}
	return n
}

// measureScenario runs the phases of each driver in use and counts leaks
// after each: the later phases reuse the pods, so their DELs could hide
// what an earlier one left.
func measureScenario(ctx context.Context, cfg config, runs [2]*sideRun, floor *floorRun, res *scenarioResult) error {
	if cfg.uses(driverLibcni) {
		if err := measureLibcni(ctx, cfg, runs, floor, res); err != nil {
			return err
		}
	}
	if !cfg.uses(driverCnitool) {
		return nil
	}
	slog.Info("cnitool", "scenario", res.sc.name, "pods", cfg.cnitoolPods)
	var err error
	if res.tool, err = cnitoolPhase(ctx, runs, cfg.cnitoolPods); err != nil {
		return fmt.Errorf("%s: %w", res.sc.name, err)
	}
	return res.countLeaks(ctx, runs)
}

// measureLibcni runs the libcni driver's phases: sequential (the floor
// taking turns with the sides when the scenario has one), memory,
// concurrent.
func measureLibcni(ctx context.Context, cfg config, runs [2]*sideRun, floor *floorRun, res *scenarioResult) error {
	slog.Info("sequential", "scenario", res.sc.name, "pods", cfg.pods)
	parts := []participant{runs[0].libcni(res.sc.verbs()), runs[1].libcni(res.sc.verbs())}
	if floor != nil {
		parts = append(parts, floor.participant())
	}
	ms, err := sequential(ctx, parts, cfg.pods, res.sc.verbs())
	if err != nil {
		return fmt.Errorf("%s: %w", res.sc.name, err)
	}
	res.seq = [2]map[verb][]float64{ms[0], ms[1]}
	if floor != nil {
		res.floor = ms[2]
	}
	if res.rss, err = memory(ctx, runs, min(rssPods, cfg.pods), cfg.rssTool, res.sc.verbs()); err != nil {
		return fmt.Errorf("%s: %w", res.sc.name, err)
	}
	if err := res.countLeaks(ctx, runs); err != nil {
		return err
	}
	if res.sc.noConcurrent != "" {
		return nil
	}
	slog.Info("concurrent", "scenario", res.sc.name, "pods", cfg.concPods, "workers", cfg.workers, "rounds", cfg.rounds)
	if res.conc, err = concurrent(ctx, runs, cfg); err != nil {
		return fmt.Errorf("%s: %w", res.sc.name, err)
	}
	return res.countLeaks(ctx, runs)
}

func (res *scenarioResult) countLeaks(ctx context.Context, runs [2]*sideRun) error {
	for k, r := range runs {
		l, err := r.leaks(ctx, res.sc.shared)
		if err != nil {
			return fmt.Errorf("%s: counting leaks on the %s side: %w", res.sc.name, r.side.name, err)
		}
		res.leaks[k] = res.leaks[k].worst(l)
	}
	return nil
}
