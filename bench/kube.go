package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"time"

	"github.com/cnisuite/cni/bench/kubelab"
)

// kubeScenario names the rows of the lease daemons on the Kubernetes API.
const kubeScenario = "subnetd vs flanneld, Kubernetes API"

// kubeBench measures subnetd against flanneld in the Kubernetes API mode
// (--kube-subnet-mgr) on one real kube-apiserver, one daemon after the
// other (bench/kubelab), and returns their rows; ratios, as the issue's
// targets bound ours relative to flanneld's.
func kubeBench(ctx context.Context, cfg config, work string) []row {
	dir := filepath.Join(work, "kube")
	pair, err := buildDaemons(ctx, cfg, filepath.Join(dir, "bin"))
	if err != nil {
		return []row{{scenario: kubeScenario, metric: firstLine(err), status: "FAILED"}}
	}
	req := kubelab.Request{Events: cfg.kubeEvents, Nodes: cfg.kubeNodes}
	var measured []int // the pair's sides, in the request's order
	for k, d := range pair {
		if d.bin != "" {
			req.Daemons = append(req.Daemons, kubelab.Daemon{Name: d.name, Bin: d.bin})
			measured = append(measured, k)
		}
	}
	slog.Info("lease daemons on the Kubernetes API", "new Nodes", cfg.kubeEvents, "Nodes at start", cfg.kubeNodes)
	res, err := kubelab.Run(ctx, cfg.repo, filepath.Join(dir, "lab"), req)
	if err != nil {
		return []row{{scenario: kubeScenario, metric: firstLine(err), status: "FAILED"}}
	}
	if len(res.Daemons) != len(measured) {
		return []row{{scenario: kubeScenario, metric: fmt.Sprintf("the kube lab returned %d daemons' figures, not %d", len(res.Daemons), len(measured)), status: "FAILED"}}
	}
	var figs [2]kubelab.Figures
	for k := range figs {
		figs[k] = kubelab.Figures{RSSKiB: math.NaN(), HWMKiB: math.NaN()} // a flanneld that could not be built
		for range cfg.kubeNodes {
			figs[k].Start = append(figs[k].Start, math.NaN())
		}
	}
	for i, k := range measured {
		figs[k] = res.Daemons[i]
		kubeBreakdown(figs[k])
	}
	return kubeRows(cfg, figs)
}

// kubeRows are the figures of the two daemons, reference first.
func kubeRows(cfg config, f [2]kubelab.Figures) []row {
	rel := func(metric string, prec int, ref, ours stat, target float64) row {
		return row{scenario: kubeScenario, metric: metric, prec: prec, ref: ref, ours: ours, target: target}
	}
	ev := func(metric string, get func(kubelab.Figures) []float64, target float64) row {
		return rel(metric, 2, summarize(get(f[0])), summarize(get(f[1])), target)
	}
	rows := []row{
		ev(fmt.Sprintf("new Node → route+neigh+FDB ms, from the create's start (%d Nodes)", len(f[1].Event)),
			func(k kubelab.Figures) []float64 { return k.Event }, 0.5),
		ev("of which the create returning (the API server and its etcd), ms", func(k kubelab.Figures) []float64 { return k.Create }, 0),
		ev("new Node → entries ms, from the API server's watch event (a bystander's)", func(k kubelab.Figures) []float64 { return k.Share }, 0),
	}
	for i, n := range cfg.kubeNodes {
		rows = append(rows, rel(fmt.Sprintf("start with %d Nodes → every peer programmed, s", n), 2, single(f[0].Start[i]), single(f[1].Start[i]), 0.25))
	}
	mb := func(kib float64) stat { return single(kib * 1024 / 1e6) }
	rows = append(rows, rel("RSS (VmRSS) after the new Nodes, MB", 1, mb(f[0].RSSKiB), mb(f[1].RSSKiB), 0.5))
	if n := len(cfg.kubeNodes); n > 0 {
		rows = append(rows, rel(fmt.Sprintf("peak RSS (VmHWM) after the %d-Node start, MB", cfg.kubeNodes[n-1]), 1, mb(f[0].HWMKiB), mb(f[1].HWMKiB), 0.5))
	}
	return rows
}

// kubeBreakdown prints where a daemon's new-Node time goes, medians in ms,
// with subnetd's own steps from its debug log (see inside).
func kubeBreakdown(f kubelab.Figures) {
	med := func(v []float64) float64 { return summarize(v).med }
	e := eventFigures{event: f.Event, put: f.Create, seen: f.Seen, share: f.Share}
	fmt.Printf("%s, Kubernetes API: create %.3f | bystander's watch event %.3f | entries %.3f (%.3f after the event)",
		f.Name, med(e.put), med(e.seen), med(e.event), med(e.share))
	if f.Name == "subnetd" {
		times := func(us []int64) []time.Time {
			out := make([]time.Time, len(us))
			for i, u := range us {
				out[i] = time.UnixMicro(u)
			}
			return out
		}
		inside(f.EventLog, times(f.SeenUS), times(f.LastUS), &e)
		fmt.Printf(" | after the event: callback %+.3f, decoded +%.3f, written +%.3f, notified +%.3f",
			med(e.callback), med(e.decode), med(e.program), med(e.notify))
	}
	fmt.Printf(" | start: %v s, VmHWM %.1f MB\n", f.Start, f.HWMKiB*1024/1e6)
}
