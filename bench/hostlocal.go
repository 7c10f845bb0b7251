package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// prefillTag starts the container IDs of the reservations a scenario puts in
// place before the first ADD; the leak count skips them.
const prefillTag = "cnibench-prefill-"

// hostLocalScenario measures host-local alone, the conflist's only plugin, in
// a network that already holds n reservations of other pods: the reference
// reads every record on each ADD and DEL, ours a couple of index files, so
// its times should not move between n = 10 and n = 1000.
func hostLocalScenario(n int, t targets) scenario {
	return scenario{
		name:    fmt.Sprintf("host-local, %d reserved", n),
		about:   fmt.Sprintf("host-local alone, 10.246.0.0/16, with %d reservations of other pods on disk before the first ADD", n),
		bins:    []string{"host-local"},
		prefill: n,
		conf: func(_, dataDir string) (map[string]any, error) {
			return conflist(map[string]any{"type": "host-local", "ipam": map[string]any{
				"type":    "host-local",
				"ranges":  []any{[]any{map[string]any{"subnet": "10.246.0.0/16"}}},
				"dataDir": dataDir,
			}}), nil
		},
		target: t,
	}
}

// prefillReservations writes n records, as host-local writes them, for pods
// that do not exist, in the network's directory (from 10.246.128.0 up, away
// from the addresses the scenario's pods get). Ours indexes them on its first
// run, the warm-up pod's ADD.
func prefillReservations(dataDir string, conf map[string]any, n int) error {
	if n == 0 {
		return nil
	}
	dir := filepath.Join(dataDir, fmt.Sprint(conf["name"]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := range n {
		addr := fmt.Sprintf("10.246.%d.%d", 128+i/256, i%256)
		if err := os.WriteFile(filepath.Join(dir, addr), fmt.Appendf(nil, "%s%d\r\neth0", prefillTag, i), 0o600); err != nil {
			return err
		}
	}
	return nil
}
