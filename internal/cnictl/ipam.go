package cnictl

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cnisuite/cni/pkg/ipam"
	"github.com/cnisuite/cni/pkg/ipam/disk"
	"github.com/cnisuite/cni/pkg/ipam/stale"
)

func ipamCommand() *command {
	return &command{name: "ipam", summary: "host-local's reservations", subs: []*command{{
		name: "ls", usage: "[--data-dir D] [--json] [NETWORK]", run: ipamLs,
		summary: "list reservations: owner, netns, state (alive/gone/unknown/corrupt/blocked), age",
	}, {
		name: "gc", usage: "NETWORK [--data-dir D] [--dry-run] [--json]", run: ipamGC,
		summary: "release the reservations whose owner is provably gone",
	}}}
}

// row is one reservation as printed.
type row struct {
	Network     string     `json:"network"`
	Address     string     `json:"address"`
	ContainerID string     `json:"containerID,omitempty"`
	IfName      string     `json:"ifname,omitempty"` // empty: a legacy record, any interface of the container
	Netns       string     `json:"netns,omitempty"`
	State       string     `json:"state"`
	Reason      string     `json:"reason"`
	Since       *time.Time `json:"since,omitempty"`
}

// blocked is the state of an entry named like an address that is no record
// (a directory, a symbolic link, ...): host-local leaves it, a hand removes it.
const blocked = "blocked"

func newRow(network string, v stale.Verdict) row {
	r := row{Network: network, Address: v.Addr.String(), ContainerID: v.Owner.ContainerID, IfName: v.Owner.IfName,
		Netns: v.Netns.Path, State: string(v.State), Reason: v.Reason}
	if errors.Is(v.Corrupt, disk.ErrNotRecord) {
		r.State = blocked
	}
	if !v.Since.IsZero() {
		since := v.Since.UTC()
		r.Since = &since
	}
	return r
}

// ipamFlags are the flags both ipam subcommands take.
type ipamFlags struct {
	fs      *flag.FlagSet
	dataDir *string
	json    *bool
}

func newIPAMFlags(e *env, name string) ipamFlags {
	fs := flag.NewFlagSet("cnictl ipam "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return ipamFlags{
		fs:      fs,
		dataDir: fs.String("data-dir", disk.DefaultDataDir, "host-local's dataDir (the ipam section's \"dataDir\")"),
		json:    fs.Bool("json", false, "print JSON instead of a table"),
	}
}

func ipamLs(e *env, args []string) error {
	f := newIPAMFlags(e, "ls")
	ops, err := parseFlags(f.fs, args)
	if err != nil {
		return err
	}
	if len(ops) > 1 {
		return usagef("ipam ls takes at most one NETWORK, got %q", ops)
	}
	networks := ops
	if len(networks) == 0 {
		if networks, err = listNetworks(*f.dataDir); err != nil {
			return err
		}
	}
	var rows []row
	var errs []error
	for _, n := range networks {
		vs, err := survey(*f.dataDir, n, nil)
		for _, v := range vs {
			rows = append(rows, newRow(n, v))
		}
		errs = append(errs, err)
	}
	if *f.json {
		err = printJSON(e.stdout, rows)
	} else {
		err = printTable(e.stdout, rows, e.now())
	}
	return errors.Join(append(errs, err)...)
}

// gcReport is what `ipam gc --json` prints.
type gcReport struct {
	Network   string `json:"network"`
	DryRun    bool   `json:"dryRun"`
	Reclaimed []row  `json:"reclaimed"`
	Kept      []row  `json:"kept"`
}

func ipamGC(e *env, args []string) error {
	f := newIPAMFlags(e, "gc")
	dryRun := f.fs.Bool("dry-run", false, "only print what would be released")
	ops, err := parseFlags(f.fs, args)
	if err != nil {
		return err
	}
	if len(ops) != 1 {
		return usagef("ipam gc takes one NETWORK, got %q", ops)
	}
	rep := gcReport{Network: ops[0], DryRun: *dryRun, Reclaimed: []row{}, Kept: []row{}}
	reclaim := stale.Reclaim
	if *dryRun {
		reclaim = func(_ ipam.Store, vs []stale.Verdict) ([]stale.Verdict, error) {
			return slices.DeleteFunc(slices.Clone(vs), func(v stale.Verdict) bool { return v.State != stale.Gone }), nil
		}
	}
	var done []stale.Verdict
	vs, err := survey(*f.dataDir, rep.Network, func(s ipam.Store, vs []stale.Verdict) error {
		var rerr error
		done, rerr = reclaim(s, vs)
		return rerr
	})
	if vs == nil && err != nil {
		return err // nothing surveyed: the network cannot be opened
	}
	for _, v := range vs {
		r := newRow(rep.Network, v)
		if slices.ContainsFunc(done, func(d stale.Verdict) bool { return d.Addr == v.Addr }) {
			rep.Reclaimed = append(rep.Reclaimed, r)
		} else {
			rep.Kept = append(rep.Kept, r)
		}
	}
	var perr error
	if *f.json {
		perr = printJSON(e.stdout, rep)
	} else {
		perr = printGC(e.stdout, rep, e.now())
	}
	return errors.Join(err, perr)
}

// listNetworks lists the network directories of dataDir.
func listNetworks(dataDir string) ([]string, error) {
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return nil, fmt.Errorf("listing networks: %w; pass the ipam section's dataDir with --data-dir", err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// survey judges every reservation of a network under its lock, then runs
// then (if any) under the same lock. A network that does not exist is an
// error, not created.
func survey(dataDir, network string, then func(ipam.Store, []stale.Verdict) error) ([]stale.Verdict, error) {
	if err := disk.CheckNetwork(dataDir, network); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dataDir, network)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("network %q has no reservations in %s; `cnictl ipam ls --data-dir %s` lists those it has", network, dataDir, dataDir)
	}
	s, err := disk.Open(dataDir, network)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	vs, err := stale.Survey(s, &stale.Prober{})
	slices.SortFunc(vs, func(a, b stale.Verdict) int { return a.Addr.Compare(b.Addr) })
	if then != nil {
		err = errors.Join(err, then(s, vs))
	}
	if err != nil {
		err = fmt.Errorf("network %s: %w", network, err)
	}
	return vs, err
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printTable(w io.Writer, rows []row, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tADDRESS\tOWNER\tNETNS\tSTATE\tAGE\tREASON")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Network, r.Address, owner(r), dash(r.Netns), r.State, age(r.Since, now), r.Reason)
	}
	return tw.Flush()
}

func printGC(w io.Writer, rep gcReport, now time.Time) error {
	verb := "released"
	if rep.DryRun {
		verb = "would release"
	}
	if len(rep.Reclaimed) > 0 {
		if err := printTable(w, rep.Reclaimed, now); err != nil {
			return err
		}
	}
	kept := map[string]int{}
	for _, r := range rep.Kept {
		kept[r.State]++
	}
	blockedToo := ""
	if n := kept[blocked]; n > 0 {
		blockedToo = fmt.Sprintf(", %d blocked", n)
	}
	_, err := fmt.Fprintf(w, "%s: %s %d of %d reservations; kept %d alive, %d unknown, %d corrupt%s (`cnictl ipam ls %s` says why)\n",
		rep.Network, verb, len(rep.Reclaimed), len(rep.Reclaimed)+len(rep.Kept),
		kept[string(stale.Alive)], kept[string(stale.Unknown)], kept[string(stale.Corrupt)], blockedToo, rep.Network)
	return err
}

func owner(r row) string {
	switch {
	case r.ContainerID == "":
		return "-"
	case r.IfName == "":
		return r.ContainerID + "/*"
	}
	return r.ContainerID + "/" + r.IfName
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age prints a duration the way operators read it: 45s, 12m, 3h20m, 4d2h.
func age(since *time.Time, now time.Time) string {
	if since == nil {
		return "-"
	}
	d := max(now.Sub(*since), 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
