package flannel

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/netconf"
)

// fakeDelegate records calls and fails the verbs it is told to; for each
// call it also records whether the saved configuration existed then.
type fakeDelegate struct {
	fail  map[string]error
	calls []fakeCall
	saved string // path of the saved configuration to look at
}

type fakeCall struct {
	verb, typ string
	conf      map[string]any
	raw       string
	savedThen bool
}

func (f *fakeDelegate) run(_ context.Context, _ *cniplugin.Args, verb, typ string, conf []byte) (types.Result, error) {
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		return nil, err
	}
	_, err := os.Stat(f.saved)
	f.calls = append(f.calls, fakeCall{verb: verb, typ: typ, conf: m, raw: string(conf), savedThen: err == nil})
	if err := f.fail[verb]; err != nil {
		return nil, err
	}
	if verb != "ADD" {
		return nil, nil
	}
	return &current.Result{CNIVersion: "1.1.0", IPs: []*current.IPConfig{{Address: net.IPNet{IP: net.IPv4(10, 244, 3, 2), Mask: net.CIDRMask(24, 32)}}}}, nil
}

func (f *fakeDelegate) verbs() []string {
	var out []string
	for _, c := range f.calls {
		out = append(out, c.verb)
	}
	return out
}

// fixture is a node's view for one attachment: subnet.env, dataDir, args.
type fixture struct {
	t       *testing.T
	env     string // subnet.env path
	dataDir string
	cniPath string
	fake    *fakeDelegate
	p       *Plugin
}

func newFixture(t *testing.T, env string) *fixture {
	dir := t.TempDir()
	f := &fixture{t: t, env: filepath.Join(dir, "subnet.env"), dataDir: filepath.Join(dir, "data"), cniPath: filepath.Join(dir, "bin")}
	// preflight looks the delegate up in CNI_PATH; the fake runs instead.
	if err := os.Mkdir(f.cniPath, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.cniPath, "bridge"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if env != "" {
		writeFile(t, f.env, env)
	}
	f.fake = &fakeDelegate{fail: map[string]error{}, saved: filepath.Join(f.dataDir, "c1-eth0")}
	f.p = &Plugin{delegate: f.fake.run}
	return f
}

func (f *fixture) args(extra map[string]any) *cniplugin.Args {
	conf := map[string]any{"subnetFile": f.env, "dataDir": f.dataDir, "subnetFileWait": "0s"}
	for k, v := range extra {
		conf[k] = v
	}
	return &cniplugin.Args{ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/x", Path: f.cniPath, StdinData: confJSON(f.t, conf)}
}

func (f *fixture) savedConf() string {
	data, err := os.ReadFile(filepath.Join(f.dataDir, "c1-eth0"))
	if err != nil {
		return ""
	}
	return string(data)
}

func TestAddSavesThenDelegates(t *testing.T) {
	f := newFixture(t, v4Env)
	res, err := f.p.Add(context.Background(), f.args(nil))
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := res.(*current.Result); r == nil || r.IPs[0].Address.String() != "10.244.3.2/24" {
		t.Fatalf("result not passed through: %v", res)
	}
	if len(f.fake.calls) != 1 || f.fake.calls[0].verb != "ADD" || f.fake.calls[0].typ != "bridge" || !f.fake.calls[0].savedThen {
		t.Fatalf("calls %+v: want one ADD of bridge, made after the configuration was saved", f.fake.calls)
	}
	if saved := f.savedConf(); saved != f.fake.calls[0].raw {
		t.Fatalf("saved %s, delegated %s", saved, f.fake.calls[0].raw)
	}
}

// TestAddFailureUndoes: a failed delegate ADD is undone by a delegate DEL
// with the same configuration; the saved file goes only if that worked.
func TestAddFailureUndoes(t *testing.T) {
	for _, delFails := range []bool{false, true} {
		f := newFixture(t, v4Env)
		f.fake.fail["ADD"] = types.NewError(11, "busy", "")
		if delFails {
			f.fake.fail["DEL"] = errors.New("iptables locked")
		}
		_, err := f.p.Add(context.Background(), f.args(nil))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != 11 || !strings.Contains(err.Error(), "busy") {
			t.Fatalf("err = %v, want the delegate's, code 11", err)
		}
		if got := f.fake.verbs(); !slices.Equal(got, []string{"ADD", "DEL"}) || f.fake.calls[1].raw != f.fake.calls[0].raw {
			t.Fatalf("calls %v: want ADD then DEL with the same configuration", got)
		}
		if kept := f.savedConf() != ""; kept != delFails {
			t.Errorf("DEL failing=%v: saved configuration kept=%v", delFails, kept)
		}
	}
}

// TestDelKeepsConfigUntilDelegateSucceeds: the first DEL fails in the
// delegate and keeps the file; the retry replays the same bytes and removes
// it; a third DEL (nothing saved) renders from subnet.env and succeeds.
func TestDelKeepsConfigUntilDelegateSucceeds(t *testing.T) {
	f := newFixture(t, v4Env)
	if _, err := f.p.Add(context.Background(), f.args(nil)); err != nil {
		t.Fatal(err)
	}
	added := f.fake.calls[0].raw
	writeFile(t, f.env, dualEnv) // the subnet changes meanwhile: DEL must not notice
	f.fake.fail["DEL"] = errors.New("host-local: disk full")
	if err := f.p.Del(context.Background(), f.args(nil)); err == nil {
		t.Fatal("DEL succeeded although the delegate failed")
	}
	if f.savedConf() != added {
		t.Fatal("the saved configuration was lost with the failed DEL")
	}
	delete(f.fake.fail, "DEL")
	if err := f.p.Del(context.Background(), f.args(nil)); err != nil {
		t.Fatal(err)
	}
	if f.fake.calls[1].raw != added || f.fake.calls[2].raw != added || f.savedConf() != "" {
		t.Fatalf("DELs replayed %q and %q, want %q; saved now %q", f.fake.calls[1].raw, f.fake.calls[2].raw, added, f.savedConf())
	}
	if err := f.p.Del(context.Background(), f.args(nil)); err != nil {
		t.Fatal(err)
	}
	if ranges := f.fake.calls[3].conf["ipam"].(map[string]any)["ranges"]; len(ranges.([]any)) != 2 {
		t.Fatalf("DEL without a saved configuration used ranges %v, want the current dual-stack ones", ranges)
	}
}

// TestDelAfterConfEditedBadly: the saved configuration is replayed even
// when the conflist became invalid since the ADD; without one, the invalid
// configuration is reported.
func TestDelAfterConfEditedBadly(t *testing.T) {
	f := newFixture(t, v4Env)
	if _, err := f.p.Add(context.Background(), f.args(nil)); err != nil {
		t.Fatal(err)
	}
	bad := f.args(map[string]any{"delegate": map[string]any{"name": "x"}, "ipam": map[string]any{"ranges": "x"}})
	if err := f.p.Del(context.Background(), bad); err != nil {
		t.Fatalf("DEL with a saved configuration: %v", err)
	}
	if len(f.fake.calls) != 2 || f.fake.calls[1].raw != f.fake.calls[0].raw || f.savedConf() != "" {
		t.Fatalf("calls %+v, saved %q: want the saved configuration replayed and removed", f.fake.verbs(), f.savedConf())
	}
	if err := f.p.Del(context.Background(), bad); codeOf(err) != 7 {
		t.Fatalf("DEL without a saved configuration and a bad conflist: %v, want its error", err)
	}
}

func TestDelWithoutAnything(t *testing.T) {
	f := newFixture(t, "")
	if err := f.p.Del(context.Background(), f.args(nil)); err != nil {
		t.Fatalf("DEL with neither saved configuration nor subnet.env: %v", err)
	}
	if c := f.fake.calls; len(c) != 1 || c[0].conf["ipam"].(map[string]any)["ranges"] != nil {
		t.Fatalf("calls %+v: want one DEL without ranges", c)
	}
	f.fake.fail["DEL"] = errors.New("delegate needs ranges")
	if err := f.p.Del(context.Background(), f.args(nil)); err != nil {
		t.Fatalf("best-effort DEL must not fail: %v", err)
	}
}

// TestDelUnreadableSavedConfig: a corrupt saved file is replaced by a
// rendering from subnet.env, and removed once the DEL worked.
func TestDelUnreadableSavedConfig(t *testing.T) {
	f := newFixture(t, v4Env)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(f.dataDir, "c1-eth0"), "{not json")
	if err := f.p.Del(context.Background(), f.args(nil)); err != nil {
		t.Fatal(err)
	}
	if len(f.fake.calls) != 1 || f.fake.calls[0].typ != "bridge" || f.savedConf() != "" {
		t.Fatalf("calls %+v, saved %q", f.fake.calls, f.savedConf())
	}
}

// TestSavedConfigNotAFile: in place of the saved file, a FIFO (which a
// read would block on), a symlink (to a configuration that is not the
// attachment's) or a file over the configuration limit is not read: DEL
// renders from subnet.env and removes the name only, CHECK fails with code 6.
func TestSavedConfigNotAFile(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "elsewhere")
	writeFile(t, outside, `{"cniVersion":"1.0.0","type":"macvlan"}`)
	for name, create := range map[string]func(path string) error{
		"fifo":    func(p string) error { return syscall.Mkfifo(p, 0o600) },
		"symlink": func(p string) error { return os.Symlink(outside, p) },
		"huge":    func(p string) error { return os.WriteFile(p, make([]byte, netconf.MaxConfSize+1), 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, v4Env)
			if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			saved := filepath.Join(f.dataDir, "c1-eth0")
			if err := create(saved); err != nil {
				t.Fatal(err)
			}
			prev := map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.244.3.2/24"}}}
			if err := f.p.Check(context.Background(), f.args(map[string]any{"prevResult": prev})); codeOf(err) != 6 || !strings.Contains(err.Error(), saved) {
				t.Errorf("CHECK: %v, want code 6 naming %s", err, saved)
			}
			if err := f.p.Del(context.Background(), f.args(nil)); err != nil {
				t.Fatal(err)
			}
			if len(f.fake.calls) != 1 || f.fake.calls[0].typ != "bridge" {
				t.Errorf("DEL delegated %+v, want bridge rendered from subnet.env", f.fake.calls)
			}
			if _, err := os.Lstat(saved); err == nil {
				t.Errorf("DEL left %s", saved)
			}
			if _, err := os.Stat(outside); err != nil {
				t.Errorf("DEL removed the symlink's target: %v", err)
			}
		})
	}
}

func TestCheckUsesSavedConfig(t *testing.T) {
	f := newFixture(t, v4Env)
	if _, err := f.p.Add(context.Background(), f.args(map[string]any{"cniVersion": "1.0.0"})); err != nil {
		t.Fatal(err)
	}
	writeFile(t, f.env, dualEnv)
	prev := map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "10.244.3.2/24"}}}
	if err := f.p.Check(context.Background(), f.args(map[string]any{"prevResult": prev})); err != nil {
		t.Fatal(err)
	}
	c := f.fake.calls[1]
	ranges := c.conf["ipam"].(map[string]any)["ranges"].([]any)
	if c.verb != "CHECK" || c.conf["cniVersion"] != "1.1.0" || c.conf["prevResult"] == nil || len(ranges) != 1 {
		t.Fatalf("CHECK got %s: want the saved configuration at 1.1.0 with the prevResult", c.raw)
	}
	f.fake.fail["CHECK"] = errors.New("eth0 is gone")
	if err := f.p.Check(context.Background(), f.args(nil)); err == nil || !strings.Contains(err.Error(), "eth0 is gone") {
		t.Fatalf("CHECK err = %v, want the delegate's", err)
	}
	other := f.args(nil)
	other.ContainerID = "c2"
	if err := f.p.Check(context.Background(), other); codeOf(err) != 3 {
		t.Fatalf("CHECK of an unknown attachment: %v, want code 3", err)
	}
}

func TestGCForwardsAndPrunes(t *testing.T) {
	f := newFixture(t, v4Env)
	for _, id := range []string{"c1", "c2"} {
		a := f.args(nil)
		a.ContainerID = id
		if _, err := f.p.Add(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	valid := []map[string]string{{"containerID": "c1", "ifname": "eth0"}}
	if err := f.p.GC(context.Background(), f.args(map[string]any{"cni.dev/valid-attachments": valid})); err != nil {
		t.Fatal(err)
	}
	gc := f.fake.calls[2]
	if gc.verb != "GC" || !strings.Contains(gc.raw, `"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]`) || gc.conf["ipam"] == nil {
		t.Fatalf("GC delegated %s", gc.raw)
	}
	if got := dirList(t, f.dataDir); !slices.Equal(got, []string{"c1-eth0"}) {
		t.Fatalf("after GC the dataDir holds %v", got)
	}
	if err := f.p.GC(context.Background(), f.args(nil)); err != nil {
		t.Fatal(err)
	}
	if got := dirList(t, f.dataDir); len(got) != 0 || !strings.Contains(f.fake.calls[3].raw, `"cni.dev/valid-attachments":[]`) {
		t.Fatalf("GC without valid attachments left %v / sent %s", got, f.fake.calls[3].raw)
	}
}

func TestStatus(t *testing.T) {
	f := newFixture(t, "")
	err := f.p.Status(context.Background(), f.args(nil))
	if codeOf(err) != 50 || !strings.Contains(err.Error(), f.env) || !strings.Contains(err.Error(), "subnetd") {
		t.Fatalf("STATUS without subnet.env: %v, want code 50 naming the file and the daemon", err)
	}
	writeFile(t, f.env, "FLANNEL_MTU=x\n")
	if err := f.p.Status(context.Background(), f.args(nil)); codeOf(err) != 50 {
		t.Fatalf("STATUS with a malformed subnet.env: %v, want code 50", err)
	}
	writeFile(t, f.env, v4Env)
	if err := f.p.Status(context.Background(), f.args(nil)); err != nil || len(f.fake.calls) != 1 || f.fake.calls[0].verb != "STATUS" {
		t.Fatalf("STATUS = %v, calls %+v: want it asked of the delegate", err, f.fake.calls)
	}
	f.fake.fail["STATUS"] = types.NewError(51, "no IP addresses available", "")
	var te *types.Error
	if err := f.p.Status(context.Background(), f.args(nil)); !errors.As(err, &te) || te.Code != 51 {
		t.Fatalf("STATUS = %v, want the delegate's code 51", err)
	}
}

// TestAddPreflight: what the delegate would refuse before running fails
// the ADD before anything is saved or delegated.
func TestAddPreflight(t *testing.T) {
	f := newFixture(t, v4Env)
	bad := f.args(nil)
	bad.Args = "IgnoreUnknown=1;IP"
	if _, err := f.p.Add(context.Background(), bad); codeOf(err) != 4 {
		t.Fatalf("malformed CNI_ARGS: %v, want code 4", err)
	}
	_, err := f.p.Add(context.Background(), f.args(map[string]any{"delegate": map[string]any{"type": "ptp"}}))
	if codeOf(err) != 7 || !strings.Contains(err.Error(), `"ptp" not found in CNI_PATH`) {
		t.Fatalf("delegate not installed: %v, want code 7", err)
	}
	if len(f.fake.calls) != 0 || f.savedConf() != "" {
		t.Fatalf("calls %+v, saved %q: want neither", f.fake.calls, f.savedConf())
	}
}

// TestAddWaitsForSubnetEnv: ADD before the daemon wrote subnet.env fails
// with code 11 after the wait and leaves nothing; nothing is delegated.
func TestAddWaitsForSubnetEnv(t *testing.T) {
	f := newFixture(t, "")
	_, err := f.p.Add(context.Background(), f.args(map[string]any{"subnetFileWait": "100ms"}))
	if codeOf(err) != 11 || len(f.fake.calls) != 0 {
		t.Fatalf("err = %v, calls %d: want code 11 and no delegation", err, len(f.fake.calls))
	}
	if _, err := os.Stat(f.dataDir); !os.IsNotExist(err) {
		t.Fatalf("dataDir created by a failed ADD: %v", err)
	}
}
