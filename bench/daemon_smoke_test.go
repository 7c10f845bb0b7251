package main

import (
	"math"
	"testing"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestDaemonSmoke runs the lease daemons' bench briefly, subnetd on both
// sides: a few lease events and one small start, every row filled.
func TestDaemonSmoke(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	cfg := config{repo: "..", leaseEvents: 3, peerCounts: []int{50}}
	rows := daemonBench(t.Context(), cfg, t.TempDir())
	for _, r := range rows {
		if r.status != "" {
			t.Fatalf("%s: %s", r.status, r.metric)
		}
	}
	for _, r := range rows {
		c := r.cells()
		if c[2] == "" || c[3] == "" || (r.target != 0 && c[9] == "") {
			t.Errorf("row %q has empty cells: %q", r.metric, c)
		}
	}
	checkNoNamespaces(t)
}

// TestAbsoluteTarget: the lease daemons' targets bound our figure, whatever
// the reference's.
func TestAbsoluteTarget(t *testing.T) {
	for _, tc := range []struct {
		name         string
		r            row
		target, want string
	}{
		{"under the bound, slower than the reference", row{ref: single(1), ours: single(1.5), target: 2, absolute: true, prec: 2}, "ours ≤ 2", "met"},
		{"over the bound, faster than the reference", row{ref: single(3), ours: single(2.5), target: 2, absolute: true, prec: 2}, "ours ≤ 2", "MISSED"},
		{"no reference", row{ref: single(math.NaN()), ours: single(0.3), target: 1, absolute: true, prec: 2}, "ours ≤ 1", "met"},
		{"count zero", row{ref: single(12), ours: single(0), target: 0.5, absolute: true}, "ours ≤ 0", "met"},
		{"count one", row{ref: single(0), ours: single(1), target: 0.5, absolute: true}, "ours ≤ 0", "MISSED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.r.cells()
			if c[8] != tc.target || c[9] != tc.want {
				t.Errorf("target %q result %q, want %q %q", c[8], c[9], tc.target, tc.want)
			}
		})
	}
}

// TestDataPlaneSmoke runs the data plane once per path for a second.
func TestDataPlaneSmoke(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	rows := dataPlane(t.Context(), config{repo: "..", dpRuns: 1, dpSeconds: 1}, t.TempDir())
	for _, r := range rows {
		c := r.cells()
		if r.status != "" || c[2] == "" || c[3] == "" || c[4] == "" {
			t.Errorf("row %q: %q", r.metric, c)
		}
	}
	checkNoNamespaces(t)
}

// TestKubeSmoke runs the Kubernetes API mode's bench briefly, subnetd on
// both sides: 3 new Nodes and a start with 3 Nodes, every row filled.
func TestKubeSmoke(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	cfg := config{repo: "..", kubeEvents: 3, kubeNodes: []int{3}}
	rows := kubeBench(t.Context(), cfg, t.TempDir())
	checkRows(t, rows)
	for _, r := range rows {
		if r.status != "" {
			t.Errorf("%s: %s", r.status, r.metric)
		}
	}
}
