package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
	dataDir     string
	linksBefore []string // the node's links before the first ADD
	rulesBase   ruleset  // the node's rules after the warm-up pod came and went
}

func (s *sideRun) id(pod int) string { return fmt.Sprintf("cnibench-%s-%d", s.side.name, pod) }

// warmID names the warm-up pod, which pays for first-use costs (page cache,
// the shared chains) outside the figures.
func (s *sideRun) warmID() string { return "cnibench-" + s.side.name + "-warm" }

func (s *sideRun) do(ctx context.Context, v verb, pod int) (time.Duration, error) {
	return s.chain.do(ctx, v, s.pods[pod], pod, s.id(pod))
}

// ids lists every container ID the scenario used on this side.
func (s *sideRun) ids() []string {
	ids := []string{s.warmID()}
	for i := range s.pods {
		ids = append(ids, s.id(i))
	}
	return ids
}

// prepare creates the side's node and pods, runs the scenario's setup and a
// warm-up pod, and records the state the leak count compares with.
func prepare(ctx context.Context, nss *namespaces, sc scenario, sd side, tag string, pods int, cfg config, work string) (*sideRun, error) {
	s := &sideRun{side: sd, dataDir: filepath.Join(work, "data")}
	var err error
	if s.node, err = nss.add(ctx, tag+"-node"); err != nil {
		return nil, err
	}
	for i := range pods {
		p, err := nss.add(ctx, fmt.Sprintf("%s-%d", tag, i))
		if err != nil {
			return nil, err
		}
		s.pods = append(s.pods, p)
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
	if err := s.warmUp(ctx); err != nil {
		return nil, err
	}
	s.rulesBase, err = readRules(ctx, s.node)
	return s, err
}

func (s *sideRun) warmUp(ctx context.Context) error {
	for _, v := range []verb{verbAdd, verbDel} {
		if _, err := s.chain.do(ctx, v, s.pods[0], 0, s.warmID()); err != nil {
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

// order alternates which side goes first, so that drift hits both.
func order(i int) [2]int {
	if i%2 == 0 {
		return [2]int{0, 1}
	}
	return [2]int{1, 0}
}

// sequential ADDs every pod, then CHECKs every pod, then DELs every pod,
// one at a time, alternating the sides pod by pod; durations in ms.
func sequential(ctx context.Context, runs [2]*sideRun, pods int, verbs []verb) ([2]map[verb][]float64, error) {
	ms := [2]map[verb][]float64{{}, {}}
	for _, v := range verbs {
		for i := range pods {
			for _, k := range order(i) {
				d, err := runs[k].do(ctx, v, i)
				if err != nil {
					return ms, fmt.Errorf("%s: %w", runs[k].side.name, err)
				}
				ms[k][v] = append(ms[k][v], float64(d.Microseconds())/1000)
			}
		}
	}
	return ms, nil
}

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
		for _, k := range order(i) {
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
		for _, k := range order(r) {
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
// reference, 1 ours).
type scenarioResult struct {
	sc      scenario
	skipped string // why it did not run
	err     error
	seq     [2]map[verb][]float64
	rss     [2][]float64 // KiB per top-level plugin invocation, from the memory pass
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
	pods := max(cfg.pods, cfg.concPods)
	for k, sd := range sides {
		tag := fmt.Sprintf("cnib%d-%d%c", os.Getpid(), idx, sd.name[0])
		dir := filepath.Join(work, fmt.Sprintf("s%d-%s", idx, sd.name))
		r, err := prepare(ctx, nss, sc, sd, tag, pods, cfg, dir)
		if err != nil {
			res.err = fmt.Errorf("%s: preparing the %s side: %w", sc.name, sd.name, err)
			return res
		}
		runs[k] = r
	}
	res.err = measureScenario(ctx, cfg, runs, &res)
	return res
}

// measureScenario runs the sequential and the concurrent phase and counts
// leaks after each: the concurrent phase reuses the container IDs, so its
// DELs could hide what the sequential phase left.
func measureScenario(ctx context.Context, cfg config, runs [2]*sideRun, res *scenarioResult) error {
	slog.Info("sequential", "scenario", res.sc.name, "pods", cfg.pods)
	var err error
	if res.seq, err = sequential(ctx, runs, cfg.pods, res.sc.verbs()); err != nil {
		return fmt.Errorf("%s: %w", res.sc.name, err)
	}
	if res.rss, err = memory(ctx, runs, min(rssPods, cfg.pods), cfg.rssTool, res.sc.verbs()); err != nil {
		return fmt.Errorf("%s: %w", res.sc.name, err)
	}
	if err := res.countLeaks(ctx, runs); err != nil {
		return err
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
