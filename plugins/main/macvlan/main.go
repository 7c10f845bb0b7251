// Command macvlan gives containers a macvlan link on a node interface, their
// own MAC on its L2 segment, a drop-in replacement for the reference CNI
// macvlan plugin (pkg/macvlan). IPAM of type host-local, static or dhcp runs
// in this process (pkg/ipam/hostlocal, pkg/ipam/static, pkg/dhcp/dhcpclient:
// the code of those binaries; dhcp still needs its daemon).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
	"github.com/cnisuite/cni/pkg/ipam/hostlocal"
	"github.com/cnisuite/cni/pkg/ipam/static"
	"github.com/cnisuite/cni/pkg/macvlan"
)

func main() {
	cniplugin.Main("macvlan", macvlan.New(), cniplugin.Link("host-local", hostlocal.Plugin{}), cniplugin.Link("static", static.Plugin{}),
		cniplugin.Link("dhcp", dhcpclient.Plugin{}))
}
