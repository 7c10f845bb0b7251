package main

import (
	"math"
	"slices"
)

// stat is a median and a 95th percentile; p95 is NaN for single figures
// (throughput, size).
type stat struct{ med, p95 float64 }

// single is a figure measured once.
func single(v float64) stat { return stat{v, math.NaN()} }

// summarize returns the median and the nearest-rank 95th percentile.
func summarize(v []float64) stat {
	if len(v) == 0 {
		return stat{math.NaN(), math.NaN()}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return stat{median(s), s[int(math.Ceil(0.95*float64(len(s))))-1]}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// ratio is ours/reference, NaN when either is missing or the reference is 0.
func ratio(ours, ref float64) float64 {
	if ref == 0 || math.IsNaN(ref) || math.IsNaN(ours) {
		return math.NaN()
	}
	return ours / ref
}
