package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// startupBins are the binaries whose start-up and size are compared.
var startupBins = []string{"bridge", "host-local", "macvlan", "portmap", "loopback"}

// binStats are one binary's figures on one side.
type binStats struct {
	ms   []float64 // wall time of each VERSION invocation
	rss  []float64 // KiB, peak of VERSION invocations under GNU time
	size int64     // bytes on disk
}

// binResult is one binary on both sides; skipped says why it was not
// measured.
type binResult struct {
	name    string
	skipped string
	sides   [2]binStats
}

// startup runs each binary's VERSION command n times per side, alternating
// the sides: the cost every invocation pays before doing any work.
func startup(ctx context.Context, sides [2]side, n int, rssTool string) ([]binResult, error) {
	var out []binResult
	for _, bin := range startupBins {
		res := binResult{name: bin}
		for _, sd := range sides {
			if !sd.has(bin) {
				res.skipped = fmt.Sprintf("the %s side has no %s binary", sd.name, bin)
			}
		}
		if res.skipped == "" {
			if err := res.measure(ctx, sides, n, rssTool); err != nil {
				return nil, err
			}
		}
		out = append(out, res)
	}
	return out, nil
}

func (res *binResult) measure(ctx context.Context, sides [2]side, n int, rssTool string) error {
	for k, sd := range sides {
		st, err := os.Stat(filepath.Join(sd.dir, res.name))
		if err != nil {
			return err
		}
		res.sides[k].size = st.Size()
	}
	for i := range n {
		for _, k := range order(i, len(sides)) {
			ms, err := versionOnce(ctx, filepath.Join(sides[k].dir, res.name))
			if err != nil {
				return err
			}
			res.sides[k].ms = append(res.sides[k].ms, ms)
		}
	}
	for i := range min(n, rssPods) {
		for _, k := range order(i, len(sides)) {
			_, kib, err := runWithRSS(ctx, rssTool, filepath.Join(sides[k].dir, res.name), []byte(versionStdin), versionEnv())
			if err != nil {
				return err
			}
			res.sides[k].rss = append(res.sides[k].rss, kib)
		}
	}
	return nil
}

// versionStdin is what a runtime sends with VERSION.
const versionStdin = `{"cniVersion":"1.0.0"}`

func versionEnv() []string { return []string{"CNI_COMMAND=VERSION", "PATH=" + os.Getenv("PATH")} }

// versionOnce runs a plugin's VERSION command, as a runtime does to learn
// which spec versions it speaks, and returns its wall time in ms.
func versionOnce(ctx context.Context, path string) (float64, error) {
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = versionEnv()
	cmd.Stdin = bytes.NewReader([]byte(versionStdin))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s VERSION: %w: %s", path, err, stderr.Bytes())
	}
	if !bytes.Contains(out, []byte("supportedVersions")) {
		return 0, fmt.Errorf("%s VERSION printed %q, not the versions it supports", path, out)
	}
	return float64(took.Microseconds()) / 1000, nil
}
