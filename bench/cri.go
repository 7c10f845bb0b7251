package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/cnisuite/cni/bench/crilab"
)

// criScenario names the rows of the plugins under containerd's CRI.
const criScenario = "containerd CRI, bridge+host-local+portmap"

// criBench runs pod sandboxes through containerd with each side's plugins
// (bench/crilab), with and without a hostPort, and returns the rows; the
// issue's targets bound the ratios of the run and the stop.
func criBench(ctx context.Context, cfg config, sides [2]side, work string) []row {
	req := crilab.Request{Pods: cfg.criPods}
	for _, s := range sides {
		req.Sides = append(req.Sides, crilab.Side{Name: s.name, PluginDir: s.dir})
	}
	slog.Info("pod sandboxes through containerd's CRI", "pods per side", cfg.criPods)
	res, err := crilab.Run(ctx, cfg.repo, filepath.Join(work, "cri"), req)
	if err == nil && len(res.Sides) != len(sides) {
		err = fmt.Errorf("the CRI lab returned %d sides' times, not %d", len(res.Sides), len(sides))
	}
	if err != nil {
		return []row{{scenario: criScenario, metric: firstLine(err), status: "FAILED"}}
	}
	var rows []row
	for _, kind := range []struct {
		name  string
		cycle func(crilab.Times) crilab.Cycle
	}{
		{"pods without a hostPort", func(t crilab.Times) crilab.Cycle { return t.Plain }},
		{fmt.Sprintf("pods with a hostPort (%d)", crilab.HostPort), func(t crilab.Times) crilab.Cycle { return t.HostPort }},
	} {
		ref, ours := kind.cycle(res.Sides[0]), kind.cycle(res.Sides[1])
		rel := func(metric string, get func(crilab.Cycle) []float64, target float64) row {
			return row{scenario: criScenario, metric: kind.name + ": " + metric, prec: 1, ref: summarize(get(ref)), ours: summarize(get(ours)), target: target}
		}
		rows = append(rows,
			rel(fmt.Sprintf("RunPodSandbox ms (%d pods; ADD inside)", len(ours.Run)), func(c crilab.Cycle) []float64 { return c.Run }, 0.8),
			rel("StopPodSandbox ms (DEL inside)", func(c crilab.Cycle) []float64 { return c.Stop }, 0.5),
			rel("RemovePodSandbox ms", func(c crilab.Cycle) []float64 { return c.Remove }, 0))
	}
	return rows
}
