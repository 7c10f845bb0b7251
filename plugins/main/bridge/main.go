// Command bridge is the bridge plugin (pkg/bridge). IPAM of type host-local
// runs in this process (pkg/ipam/hostlocal, the code of the host-local
// binary).
package main

import (
	"github.com/cnisuite/cni/pkg/bridge"
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/ipam/hostlocal"
)

func main() {
	cniplugin.Main("bridge", bridge.New(), cniplugin.Link("host-local", hostlocal.Plugin{}))
}
