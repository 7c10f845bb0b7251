// Command bridge attaches containers to a Linux bridge through veth pairs,
// a drop-in replacement for the reference CNI bridge plugin. IPAM of type
// host-local runs in this process (pkg/ipam/hostlocal, the code of the
// host-local binary).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/ipam/hostlocal"
)

func main() {
	cniplugin.Main("bridge", &plugin{}, cniplugin.LinkIPAM("host-local", hostlocal.Plugin{}))
}
