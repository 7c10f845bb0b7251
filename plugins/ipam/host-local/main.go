// Command host-local is the host-local IPAM plugin (pkg/ipam/hostlocal).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/ipam/hostlocal"
)

func main() { cniplugin.Main("host-local", hostlocal.Plugin{}) }
