// Command ptp joins containers to the node by a veth pair and routes them, a
// drop-in replacement for the reference CNI ptp plugin (pkg/ptp). IPAM of
// type host-local, static or dhcp runs in this process (pkg/ipam/hostlocal,
// pkg/ipam/static, pkg/dhcp/dhcpclient: the code of those binaries; dhcp
// still needs its daemon).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
	"github.com/cnisuite/cni/pkg/ipam/hostlocal"
	"github.com/cnisuite/cni/pkg/ipam/static"
	"github.com/cnisuite/cni/pkg/ptp"
)

func main() {
	cniplugin.Main("ptp", ptp.New(), cniplugin.Link("host-local", hostlocal.Plugin{}), cniplugin.Link("static", static.Plugin{}),
		cniplugin.Link("dhcp", dhcpclient.Plugin{}))
}
