package cniplugin

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cnisuite/cni/pkg/netconf"
)

// fakePlugin records the verbs it runs and hands out one address.
type fakePlugin struct {
	verbs []string
	stdin string // the configuration of the last ADD
	fail  error
}

func (f *fakePlugin) Add(_ context.Context, a *Args) (types.Result, error) {
	f.verbs, f.stdin = append(f.verbs, a.Command), string(a.StdinData)
	_, ipn, _ := net.ParseCIDR("10.1.0.5/24")
	return &current.Result{CNIVersion: current.ImplementedSpecVersion, IPs: []*current.IPConfig{{Address: *ipn}}}, f.fail
}
func (f *fakePlugin) record(a *Args) error                    { f.verbs = append(f.verbs, a.Command); return f.fail }
func (f *fakePlugin) Check(_ context.Context, a *Args) error  { return f.record(a) }
func (f *fakePlugin) Del(_ context.Context, a *Args) error    { return f.record(a) }
func (f *fakePlugin) GC(_ context.Context, a *Args) error     { return f.record(a) }
func (f *fakePlugin) Status(_ context.Context, a *Args) error { return f.record(a) }

// TestLinkedPluginsRunInProcess runs a linked IPAM plugin through Args.IPAM
// with no CNI_PATH (an exec could not find it) and checks that it gets
// every verb and that its answers are what its binary would have printed:
// the result in the configuration's version, errors with their CNI code;
// then as a delegate, with a configuration of its own.
func TestLinkedPluginsRunInProcess(t *testing.T) {
	f := &fakePlugin{}
	r := &runner{}
	Link("fake", f)(r)
	a := &Args{StdinData: []byte(`{"cniVersion":"0.4.0","name":"n","type":"bridge","ipam":{"type":"fake"}}`), linked: r.linked}
	ctx := context.Background()
	res, err := a.IPAM(ctx, "ADD", "fake")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.(*types040.Result); !ok {
		t.Errorf("ADD result is a %T, want the configuration's version 0.4.0", res)
	}
	for _, verb := range []string{"CHECK", "DEL", "GC", "STATUS"} {
		if _, err := a.IPAM(ctx, verb, "fake"); err != nil {
			t.Fatalf("%s: %v", verb, err)
		}
	}
	if got, want := f.verbs, []string{"ADD", "CHECK", "DEL", "GC", "STATUS"}; !slices.Equal(got, want) {
		t.Errorf("the linked plugin ran %v, want %v", got, want)
	}
	f.fail = netconf.Errorf(netconf.CodeExhausted, "no addresses left")
	_, err = a.IPAM(ctx, "ADD", "fake")
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != netconf.CodeExhausted || err.Error() != `IPAM plugin "fake": no addresses left` {
		t.Errorf("failing ADD: %v, want the CNI error of code %d named after the plugin", err, netconf.CodeExhausted)
	}
	if _, err := a.IPAM(ctx, "ADD", "other"); err == nil {
		t.Error("an IPAM type not linked in ran without an exec")
	}

	// A delegate (flannel's) gets its own configuration, not the caller's.
	f.fail = nil
	conf := `{"cniVersion":"1.1.0","name":"n","type":"fake"}`
	res, err = a.Delegate(ctx, "ADD", "fake", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.(*current.Result); !ok || f.stdin != conf {
		t.Errorf("delegate ADD got %s and returned a %T, want %s and the version 1.1.0 result", f.stdin, res, conf)
	}

	// A result the binary could not have printed is undone, not leaked.
	f.verbs = nil
	if _, err := a.Delegate(ctx, "ADD", "fake", []byte(`{"cniVersion":"9.9.9","name":"n","type":"fake"}`)); err == nil {
		t.Error("ADD whose result has no version 9.9.9 succeeded")
	}
	if want := []string{"ADD", "DEL"}; !slices.Equal(f.verbs, want) {
		t.Errorf("ADD that could not convert its result ran %v, want %v", f.verbs, want)
	}
}
