// Command tap makes a persistent tap device in a container for a virtual
// machine's process there, a drop-in replacement for the reference CNI tap
// plugin (pkg/tap). IPAM of type host-local, static or dhcp runs in this
// process (pkg/ipam/hostlocal, pkg/ipam/static, pkg/dhcp/dhcpclient: the
// code of those binaries; dhcp still needs its daemon).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
	"github.com/cnisuite/cni/pkg/ipam/hostlocal"
	"github.com/cnisuite/cni/pkg/ipam/static"
	"github.com/cnisuite/cni/pkg/tap"
)

func main() {
	cniplugin.Main("tap", tap.New(), cniplugin.Link("host-local", hostlocal.Plugin{}), cniplugin.Link("static", static.Plugin{}),
		cniplugin.Link("dhcp", dhcpclient.Plugin{}))
}
