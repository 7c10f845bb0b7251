// Command host-device lends a device of the node to a container and gives it
// back on DEL, a drop-in replacement for the reference CNI host-device
// plugin (pkg/hostdevice). IPAM of type host-local, static or dhcp runs in
// this process (pkg/ipam/hostlocal, pkg/ipam/static, pkg/dhcp/dhcpclient:
// the code of those binaries; dhcp still needs its daemon).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
	"github.com/cnisuite/cni/pkg/hostdevice"
	"github.com/cnisuite/cni/pkg/ipam/hostlocal"
	"github.com/cnisuite/cni/pkg/ipam/static"
)

func main() {
	cniplugin.Main("host-device", hostdevice.New(), cniplugin.Link("host-local", hostlocal.Plugin{}), cniplugin.Link("static", static.Plugin{}),
		cniplugin.Link("dhcp", dhcpclient.Plugin{}))
}
