package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strings"
	"text/tabwriter"
)

// direction says which way a figure improves.
type direction int

const (
	lowerBetter direction = iota
	higherBetter
)

// row is one line of the results table.
type row struct {
	scenario, metric string
	ref, ours        stat
	prec             int // decimals of the figures
	better           direction
	target           float64 // bound on the median ratio; 0: none
	absolute         bool    // target bounds our median itself, not the ratio
	leaks            *[2]leaks
	status           string // "skipped"/"FAILED" rows carry only this and metric
}

var header = []string{"scenario", "metric", "reference", "ours", "ratio", "ref p95", "ours p95", "ratio p95", "target", "result"}

func (r row) cells() []string {
	if r.status != "" {
		return []string{r.scenario, r.metric, "", "", "", "", "", "", "", r.status}
	}
	if r.leaks != nil {
		met := "met"
		if r.leaks[1].total() != 0 {
			met = "MISSED"
		}
		return []string{r.scenario, r.metric, r.leaks[0].String(), r.leaks[1].String(), "", "", "", "", "ours 0", met}
	}
	num := func(v float64, prec int) string {
		if math.IsNaN(v) {
			return ""
		}
		return fmt.Sprintf("%.*f", prec, v)
	}
	rm, rp := ratio(r.ours.med, r.ref.med), ratio(r.ours.p95, r.ref.p95)
	return []string{r.scenario, r.metric,
		num(r.ref.med, r.prec), num(r.ours.med, r.prec), num(rm, 2),
		num(r.ref.p95, r.prec), num(r.ours.p95, r.prec), num(rp, 2),
		r.targetText(), r.result(r.judged(rm))}
}

// judged is the figure the target applies to.
func (r row) judged(ratio float64) float64 {
	if r.absolute {
		return r.ours.med
	}
	return ratio
}

func (r row) targetText() string {
	switch {
	case r.target == 0:
		return ""
	case r.absolute && r.better == higherBetter:
		return fmt.Sprintf("ours ≥ %g", r.target)
	case r.absolute && r.prec == 0:
		return fmt.Sprintf("ours ≤ %d", int(r.target)) // counts: the bound is below the next whole number
	case r.absolute:
		return fmt.Sprintf("ours ≤ %g", r.target)
	case r.better == higherBetter:
		return fmt.Sprintf("≥ %g", r.target)
	}
	return fmt.Sprintf("≤ %g", r.target)
}

func (r row) result(rm float64) string {
	if r.target == 0 {
		return ""
	}
	if (r.better == lowerBetter && rm <= r.target) || (r.better == higherBetter && rm >= r.target) {
		return "met"
	}
	return "MISSED"
}

// scenarioRows turns one scenario's figures into table rows: each driver's
// that ran, the floor's, the memory and concurrent phases' (libcni), leaks.
func scenarioRows(res scenarioResult) []row {
	name := res.sc.name
	switch {
	case res.skipped != "":
		return []row{{scenario: name, metric: "not run: " + res.skipped, status: "skipped"}}
	case res.err != nil:
		msg, _, _ := strings.Cut(res.err.Error(), "\n")
		return []row{{scenario: name, metric: msg, status: "FAILED"}}
	}
	t := res.sc.target
	var rows []row
	if res.seq[1] != nil {
		rows = append(rows, latencyRows(res.seq, res.sc.verbs(), "", map[verb]float64{verbAdd: t.add, verbCheck: t.check, verbDel: t.del})...)
		rows = append(rows, floorRows(res)...)
	}
	if res.tool[1] != nil {
		rows = append(rows, latencyRows(res.tool, cnitoolVerbs, " (cnitool)", map[verb]float64{verbAdd: t.cnitoolAdd, verbDel: t.cnitoolDel})...)
	}
	if res.seq[1] != nil {
		rows = append(rows, libcniRows(res)...)
	}
	rows = append(rows, row{metric: "leaks (reservations+links+rules)", leaks: &res.leaks})
	for i := range rows {
		rows[i].scenario = name
	}
	return rows
}

// latencyRows are the median and p95 per verb of a sequential phase; label
// follows the verb's name in the metric.
func latencyRows(ms [2]map[verb][]float64, verbs []verb, label string, target map[verb]float64) []row {
	var rows []row
	for _, v := range verbs {
		rows = append(rows, row{metric: v.String() + " ms" + label, prec: 1, target: target[v],
			ref: summarize(ms[0][v]), ours: summarize(ms[1][v])})
	}
	return rows
}

// floorRows put the floor program's ADD and DEL in the reference column and
// ours (libcni) beside it.
func floorRows(res scenarioResult) []row {
	if res.floor == nil {
		return nil
	}
	var rows []row
	for _, v := range []verb{verbAdd, verbDel} {
		rows = append(rows, row{metric: v.String() + " ms, ours vs floor", prec: 1, target: floorTarget,
			ref: summarize(res.floor[v]), ours: summarize(res.seq[1][v])})
	}
	return rows
}

// libcniRows are the memory pass's and the concurrent phase's.
func libcniRows(res scenarioResult) []row {
	mib := func(kib []float64) stat { s := summarize(kib); return stat{s.med / 1024, s.p95 / 1024} }
	rate := func(k int, d float64) stat { return single(float64(res.conc[k].pods) / d) }
	add := func(k int) float64 { return res.conc[k].add.Seconds() }
	del := func(k int) float64 { return res.conc[k].del.Seconds() }
	rss := row{metric: "RSS per invocation, MiB", prec: 1, ref: mib(res.rss[0]), ours: mib(res.rss[1])}
	if res.sc.noConcurrent != "" {
		return []row{rss}
	}
	return []row{
		rss,
		{metric: "concurrent ADD pods/s", prec: 1, better: higherBetter, ref: rate(0, add(0)), ours: rate(1, add(1))},
		{metric: "concurrent DEL pods/s", prec: 1, better: higherBetter, ref: rate(0, del(0)), ours: rate(1, del(1))},
		{metric: "concurrent ADD+DEL pods/s", prec: 1, better: higherBetter, target: res.sc.target.conc,
			ref: rate(0, add(0)+del(0)), ours: rate(1, add(1)+del(1))},
	}
}

// binaryRows turns the start-up figures into table rows.
func binaryRows(bins []binResult) []row {
	var rows []row
	for _, b := range bins {
		name := "binary " + b.name
		if b.skipped != "" {
			rows = append(rows, row{scenario: name, metric: "not run: " + b.skipped, status: "skipped"})
			continue
		}
		ref, ours := b.sides[0], b.sides[1]
		kib := func(s binStats) stat { st := summarize(s.rss); return stat{st.med / 1024, st.p95 / 1024} }
		rows = append(rows,
			row{scenario: name, metric: "start-up (VERSION) ms", prec: 2, ref: summarize(ref.ms), ours: summarize(ours.ms)},
			row{scenario: name, metric: "RSS (VERSION), MiB", prec: 1, ref: kib(ref), ours: kib(ours)},
			row{scenario: name, metric: "size, MiB", prec: 1, ref: single(float64(ref.size) / (1 << 20)), ours: single(float64(ours.size) / (1 << 20))})
	}
	return rows
}

// writeText prints the table with aligned columns.
func writeText(w io.Writer, rows []row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r.cells(), "\t"))
	}
	return tw.Flush()
}

// markdownTable renders the same table for BENCHMARKS.md.
func markdownTable(rows []row) string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(header, " | ") + " |\n|")
	for range header {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r.cells(), " | ") + " |\n")
	}
	return b.String()
}

// The generated part of BENCHMARKS.md lies between these markers; the prose
// around it (method, analysis) is kept.
const (
	beginMarker = "<!-- cnibench:begin (generated by make bench; edits inside are overwritten) -->"
	endMarker   = "<!-- cnibench:end -->"
)

// splice replaces the generated part of doc with block, appending it when
// doc has none yet.
func splice(doc, block string) string {
	gen := beginMarker + "\n" + block + endMarker
	i := strings.Index(doc, beginMarker)
	j := strings.Index(doc, endMarker)
	if i < 0 || j < i {
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		return doc + gen + "\n"
	}
	return doc[:i] + gen + doc[j+len(endMarker):]
}

// updateMarkdown writes block into the generated part of the file at path.
func updateMarkdown(path, block string) error {
	doc, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if len(doc) == 0 {
		doc = []byte("# Benchmarks\n\n")
	}
	return os.WriteFile(path, []byte(splice(string(doc), block)), 0o644)
}
