package subnetd

import (
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnisuite/cni/pkg/subnet"
	"github.com/cnisuite/cni/pkg/subnet/envfile"
	netnstest "github.com/cnisuite/cni/test/netns"
)

// TestBlackholeRoute: --ip-blackhole-route keeps a blackhole route for each
// of the node's subnets: added with the data plane, put back by the resync
// after a removal, moved with the lease, and removed with the data plane
// and by --cleanup, without touching another route to the same subnet.
func TestBlackholeRoute(t *testing.T) {
	node := netnstest.New(t, "sd-blackhole")
	node.Run(t, "ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p")
	node.Run(t, "ip", "link", "set", "cni0", "up")
	node.Run(t, "ip", "link", "set", "cni0p", "up")
	// A pod bridge's route to the IPv6 subnet: the blackhole one must not
	// take its place, nor go with it.
	node.Run(t, "ip", "addr", "add", "fd00:10:244:3::1/64", "dev", "cni0", "nodad")
	routes := func() string {
		out := node.Run(t, "ip", "route", "show", "type", "blackhole")
		return strings.Join(strings.Fields(out+" "+node.Run(t, "ip", "-6", "route", "show", "type", "blackhole")), " ")
	}
	bridgeRoute := func() bool {
		return strings.Contains(node.Run(t, "ip", "-6", "route", "show", "dev", "cni0"), "fd00:10:244:3::/64")
	}
	own := subnet.Subnets{V4: netip.MustParsePrefix("10.244.3.0/24"), V6: netip.MustParsePrefix("fd00:10:244:3::/64")}
	bh := &blackholes{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	dp := blackholePlane{dataPlane: &fakePlane{}, bh: bh}
	inNode := func(fn func() error) {
		t.Helper()
		node.Do(t, fn)
	}

	inNode(func() error { _, err := dp.Ensure(own); return err })
	if got := routes(); !strings.Contains(got, "blackhole 10.244.3.0/24") || !strings.Contains(got, "blackhole fd00:10:244:3::/64") {
		t.Fatalf("after Ensure: %q, want both subnets' blackhole routes", got)
	}
	node.Run(t, "ip", "route", "del", "blackhole", "10.244.3.0/24")
	inNode(func() error { bh.ensure(); return nil })
	if got := routes(); !strings.Contains(got, "blackhole 10.244.3.0/24") {
		t.Fatalf("not put back by the resync: %q", got)
	}
	own.V4 = netip.MustParsePrefix("10.244.4.0/24")
	inNode(func() error { _, err := dp.Ensure(own); return err })
	if got := routes(); strings.Contains(got, "10.244.3.0/24") || !strings.Contains(got, "blackhole 10.244.4.0/24") {
		t.Fatalf("after a lease change: %q, want 10.244.4.0/24's only", got)
	}
	inNode(dp.Teardown)
	if got := routes(); got != "" || !bridgeRoute() {
		t.Fatalf("after Teardown: blackhole routes %q, bridge's route kept: %v", got, bridgeRoute())
	}

	// --cleanup removes those of the subnets subnet.env names.
	node.Run(t, "ip", "route", "add", "blackhole", "10.244.4.0/24")
	node.Run(t, "ip", "-6", "route", "add", "blackhole", "fd00:10:244:3::/64")
	env := filepath.Join(t.TempDir(), "subnet.env")
	if err := envfile.Write(env, envfile.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.4.1/24"),
		IPv6Network: netip.MustParsePrefix("fd00:10:244::/48"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:3::1/64"), MTU: 1450}); err != nil {
		t.Fatal(err)
	}
	inNode(func() error { return cleanup(&Config{SubnetFile: env}, bh.log) })
	if got := routes(); got != "" || !bridgeRoute() {
		t.Fatalf("after --cleanup: blackhole routes %q, bridge's route kept: %v", got, bridgeRoute())
	}
}
