package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// leaks counts what a scenario left behind after every pod was deleted.
type leaks struct {
	reservations int // host-local files other than the lock and last_reserved_ip
	links        int // links in the node that were not there before, pods' links but lo
	rules        int // iptables/nft lines new since the warm-up, or naming a pod
}

func (l leaks) total() int { return l.reservations + l.links + l.rules }

// worst keeps the larger count of each kind: a leak still there after the
// next phase is the same leak, counted once.
func (l leaks) worst(o leaks) leaks {
	return leaks{max(l.reservations, o.reservations), max(l.links, o.links), max(l.rules, o.rules)}
}

func (l leaks) String() string {
	return fmt.Sprintf("%d+%d+%d", l.reservations, l.links, l.rules)
}

// rulesets are the node's packet-filter rules as lines ("table|rule"), from
// every tool that can show them.
type ruleset map[string]int

// readRules reads the node's IPv4 and IPv6 iptables rules and nft tables.
// Counters are dropped so that traffic does not look like a change.
func readRules(ctx context.Context, node *namespace) (ruleset, error) {
	rs := ruleset{}
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := node.output(ctx, tool)
		if err != nil {
			return nil, err
		}
		rs.addSave(tool, out)
	}
	out, err := node.output(ctx, "nft", "list", "tables")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			rs["nft|"+line]++
		}
	}
	return rs, nil
}

// addSave adds the chains and rules of iptables-save output, each prefixed
// with its tool and table.
func (rs ruleset) addSave(tool, out string) {
	table := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			rs[tool+"|"+table+"|"+strings.Fields(line)[0]]++ // chain, without policy counters
		case strings.HasPrefix(line, "-A "):
			rs[tool+"|"+table+"|"+line]++
		}
	}
}

// leakedRules counts the lines of now that are not in base (the state after
// the warm-up pod came and went, when the shared chains exist) or that name
// one of the scenario's containers (which catches the warm-up pod itself).
func leakedRules(base, now ruleset, ids []string) int {
	n := 0
	for line, count := range now {
		extra := count - base[line]
		if extra < 0 {
			extra = 0
		}
		if extra < count && slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(line, id) }) {
			extra = count
		}
		n += extra
	}
	return n
}

// countReservations counts host-local's files under dataDir that belong to
// an attachment: its records and, in ours, its index entries (the index's
// stamp, .cnisuite/index, is the network's, as the lock is), except those of
// the pods a scenario put in place beforehand (prefillTag). IPAM that keeps
// no state (static) leaves no dataDir: nothing to count.
func countReservations(dataDir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if path == dataDir && errors.Is(err, fs.ErrNotExist) {
			return filepath.SkipDir
		}
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		stamp := name == "index" && filepath.Base(filepath.Dir(path)) == ".cnisuite"
		if name == "lock" || strings.HasPrefix(name, "last_reserved_ip") || stamp {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(data), prefillTag) {
			n++
		}
		return nil
	})
	return n, err
}

// leakedLinks counts links in the node that were not there before the
// first ADD, other than the shared ones the conf asks for, and every link
// but loopback left in a pod.
func leakedLinks(node *namespace, before, shared []string, pods []*namespace) (int, error) {
	names, err := node.linkNames()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		if !slices.Contains(before, name) && !slices.Contains(shared, name) {
			n++
		}
	}
	for _, p := range pods {
		names, err := p.linkNames()
		if err != nil {
			return 0, err
		}
		for _, name := range names {
			if name != "lo" {
				n++
			}
		}
	}
	return n, nil
}
