package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestStaticThroughBridge: bridge runs static IPAM in its own process; the
// runtime's ips and mac (capabilities, as Multus passes them) become the
// pod's addresses and MAC, usable at once, and DEL leaves nothing.
func TestStaticThroughBridge(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	node := netnstest.New(t, "cni-e2e-node")
	list, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.1.0","name":"static-e2e","plugins":[
		{"type":"bridge","bridge":"stbr0","isGateway":true,"capabilities":{"ips":true,"mac":true},
		 "ipam":{"type":"static","routes":[{"dst":"0.0.0.0/0"}]}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := &libcniClient{node: node, list: list, data: t.TempDir(), cache: t.TempDir()}
	c.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, c.cache, nil)
	pods := []struct {
		ns   *netnstest.NS
		ips  []string
		mac  string
		want string // the result's addresses
		res  *current.Result
	}{
		{ns: netnstest.New(t, "cni-e2e-pod"), ips: []string{"10.77.0.10/24", "fd77::10/64"}, mac: "02:00:00:77:00:0a", want: "10.77.0.10 fd77::10"},
		{ns: netnstest.New(t, "cni-e2e-pod"), ips: []string{"10.77.0.11/24", "fd77::11/64"}, mac: "02:00:00:77:00:0b", want: "10.77.0.11 fd77::11"},
	}
	rt := func(i int) *libcni.RuntimeConf {
		r := c.rt(pods[i].ns)
		r.CapabilityArgs = map[string]any{"ips": pods[i].ips, "mac": pods[i].mac}
		return r
	}
	for i := range pods {
		err := c.inNode(t, func(ctx context.Context) error {
			r, err := c.cni.AddNetworkList(ctx, list, rt(i))
			if err == nil {
				pods[i].res, err = current.NewResultFromResult(r)
			}
			return err
		})
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		if got := strings.Join(addrsOf(pods[i].res), " "); got != pods[i].want {
			t.Errorf("pod %d: result addresses %v", i, got)
		}
		if out := pods[i].ns.Run(t, "ip", "-br", "link", "show", "eth0"); !strings.Contains(out, pods[i].mac) {
			t.Errorf("pod %d: eth0 is %s, want MAC %s", i, out, pods[i].mac)
		}
	}
	pingAll(t, pods[0].ns, addrsOf(pods[1].res))
	for i := range pods {
		if err := c.inNode(t, func(ctx context.Context) error { return c.cni.CheckNetworkList(ctx, list, rt(i)) }); err != nil {
			t.Errorf("CHECK %d: %v", i, err)
		}
		for range 2 {
			if err := c.inNode(t, func(ctx context.Context) error { return c.cni.DelNetworkList(ctx, list, rt(i)) }); err != nil {
				t.Fatalf("DEL %d: %v", i, err)
			}
		}
		detached(t, pods[i].ns, pods[i].res)
	}
	nothingLeft(t, c, node, "static-e2e")
}
