// Command flannel is the meta plugin of flannel networks (pkg/flannel): it
// turns the node's subnet.env (written by subnetd or flanneld) into the
// configuration of another plugin (bridge with host-local by default) and
// delegates to it, a drop-in replacement for flannel's CNI plugin. A bridge
// delegate and its host-local, static or dhcp IPAM run in this process
// (pkg/bridge, pkg/ipam/hostlocal, pkg/ipam/static, pkg/dhcp/dhcpclient: the
// code of those binaries; dhcp still needs its daemon); any other type is
// exec'd from CNI_PATH.
package main

import (
	"github.com/cnisuite/cni/pkg/bridge"
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/dhcp/dhcpclient"
	"github.com/cnisuite/cni/pkg/flannel"
	"github.com/cnisuite/cni/pkg/ipam/hostlocal"
	"github.com/cnisuite/cni/pkg/ipam/static"
)

func main() {
	cniplugin.Main("flannel", &flannel.Plugin{},
		cniplugin.Link("bridge", bridge.New()), cniplugin.Link("host-local", hostlocal.Plugin{}), cniplugin.Link("static", static.Plugin{}),
		cniplugin.Link("dhcp", dhcpclient.Plugin{}))
}
