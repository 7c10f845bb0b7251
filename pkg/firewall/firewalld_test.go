package firewall

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/cnisuite/cni/pkg/netconf"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// privateBus starts a dbus-daemon of its own on a socket in a temporary
// directory, for this test alone, and stops it when the test ends.
func privateBus(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("needs dbus-daemon (Debian: apt-get install dbus-daemon)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bus.conf")
	err = os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=`+dir+`/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config-file="+conf, "--nofork", "--nopidfile", "--print-address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon printed no address: %v", err)
	}
	return strings.TrimSpace(addr)
}

// fakeFirewalld serves firewalld's zone methods on a bus: sources by zone,
// firewalld's error codes for an unknown zone, a source already in a zone
// and a source to remove that is not there; fail makes addSource fail for
// one source.
type fakeFirewalld struct {
	mu      sync.Mutex
	sources map[string][]string
	fail    string
}

func zoneError(code, msg string) *dbus.Error {
	return dbus.NewError("org.fedoraproject.FirewallD1.Exception", []any{code + ": " + msg})
}

func (f *fakeFirewalld) methods() map[string]any {
	return map[string]any{
		"addSource": func(zone, src string) (string, *dbus.Error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if _, ok := f.sources[zone]; !ok {
				return "", zoneError("INVALID_ZONE", zone)
			}
			if src == f.fail {
				return "", zoneError("COMMAND_FAILED", src)
			}
			for _, srcs := range f.sources {
				if slices.Contains(srcs, src) {
					return "", zoneError("ZONE_ALREADY_SET", src)
				}
			}
			f.sources[zone] = append(f.sources[zone], src)
			return zone, nil
		},
		"removeSource": func(zone, src string) (string, *dbus.Error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			i := slices.Index(f.sources[zone], src)
			if i < 0 {
				return "", zoneError("UNKNOWN_SOURCE", src)
			}
			f.sources[zone] = slices.Delete(f.sources[zone], i, i+1)
			return zone, nil
		},
		"querySource": func(zone, src string) (bool, *dbus.Error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return slices.Contains(f.sources[zone], src), nil
		},
	}
}

func (f *fakeFirewalld) in(zone string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sources[zone])
}

// startFirewalld puts a fakeFirewalld on the bus at addr under firewalld's
// name.
func startFirewalld(t *testing.T, addr string) *fakeFirewalld {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeFirewalld{sources: map[string][]string{"trusted": nil, "public": nil}}
	if err := conn.ExportMethodTable(f.methods(), firewalldPath, zoneInterface); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName(firewalldName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("taking firewalld's name: %v %v", reply, err)
	}
	return f
}

// TestFirewalld: against firewalld on a bus, ADD puts the pod's addresses
// into the zone (the default trusted, or firewalldZone), also without a
// backend key since firewalld runs, CHECK finds them, DEL takes them out,
// and a second DEL finds nothing to do; an unknown zone is code 7; an ADD
// that fails on its second address takes the first back.
func TestFirewalld(t *testing.T) {
	addr := privateBus(t)
	// In a namespace of its own: were firewalld not found, the plugin
	// would take iptables.
	node := netnstest.New(t, "fw-zone")
	node.Do(t, func() error { testFirewalld(t, addr); return nil })
}

func testFirewalld(t *testing.T, addr string) {
	p, ctx := &Plugin{bus: addr}, context.Background()
	if firewalldRunning(ctx, addr) {
		t.Fatal("firewalld found on a bus without it")
	}
	fw := startFirewalld(t, addr)
	both := []string{"10.1.0.5/32", "fd00::5/128"}
	for _, keys := range []string{``, `"backend":"firewalld",`} {
		conf := args(confWith(keys, prev))
		if _, err := p.Add(ctx, conf); err != nil {
			t.Fatal(err)
		}
		if got := fw.in("trusted"); !slices.Equal(got, both) {
			t.Fatalf("trusted zone holds %q after ADD, want %q", got, both)
		}
		if err := p.Check(ctx, conf); err != nil {
			t.Errorf("CHECK: %v", err)
		}
		for range 2 {
			if err := p.Del(ctx, conf); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		}
		if got := fw.in("trusted"); len(got) != 0 {
			t.Fatalf("trusted zone holds %q after DEL", got)
		}
		if err := p.Check(ctx, conf); err == nil || !strings.Contains(err.Error(), "is not a source of zone") {
			t.Errorf("CHECK after DEL: %v", err)
		}
	}
	if _, err := p.Add(ctx, args(confWith(`"backend":"firewalld","firewalldZone":"public",`, prev))); err != nil || !slices.Equal(fw.in("public"), both) {
		t.Errorf("ADD into public: %v, zone holds %q", err, fw.in("public"))
	}
	var ne *netconf.Error
	if _, err := p.Add(ctx, args(confWith(`"backend":"firewalld","firewalldZone":"nope",`, prev))); !errors.As(err, &ne) || ne.Code != netconf.CodeInvalidConfig {
		t.Errorf("ADD into an unknown zone: %v, want code 7", err)
	}
	fw.fail = "fd00::5/128"
	conf := args(confWith(`"backend":"firewalld",`, prev))
	conf.ContainerID = "c9"
	if err := p.Del(ctx, args(confWith(`"backend":"firewalld","firewalldZone":"public",`, prev))); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Add(ctx, conf); err == nil || !strings.Contains(err.Error(), "COMMAND_FAILED") {
		t.Fatalf("ADD with firewalld failing: %v", err)
	}
	if got := fw.in("trusted"); len(got) != 0 {
		t.Errorf("a failed ADD left %q in the zone", got)
	}
	if err := p.Status(ctx, args(confWith(`"backend":"firewalld",`, ""))); err != nil {
		t.Errorf("STATUS with firewalld running: %v", err)
	}
}

// TestFirewalldIsolation: with firewalld, an ingress policy isolates the
// bridge with iptables, as the reference does, and adds no CNI-FORWARD
// rule: the zone accepts the pod.
func TestFirewalldIsolation(t *testing.T) {
	addr := privateBus(t)
	fw := startFirewalld(t, addr)
	node := netnstest.New(t, "fw-fwd")
	p, ctx := &Plugin{bus: addr}, context.Background()
	conf := args(confWith(`"backend":"firewalld","ingressPolicy":"same-bridge",`, prev))
	node.Do(t, func() error { _, err := p.Add(ctx, conf); return err })
	rules := ruleset(t, node)
	if !strings.Contains(rules, "-i cni0 ! -o cni0") || strings.Contains(rules, "CNI-FORWARD") || len(fw.in("trusted")) != 2 {
		t.Errorf("rules:\n%s\nzone %q", rules, fw.in("trusted"))
	}
	node.Do(t, func() error { return p.Check(ctx, conf) })
	node.Do(t, func() error { return p.Del(ctx, conf) })
	if len(fw.in("trusted")) != 0 {
		t.Errorf("zone after DEL: %q", fw.in("trusted"))
	}
}
