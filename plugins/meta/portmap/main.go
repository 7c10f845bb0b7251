// Command portmap forwards host ports to a container, chained after the
// plugin that gives the container its addresses: a drop-in replacement
// for the reference CNI portmap plugin (pkg/portmap).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/portmap"
)

func main() { cniplugin.Main("portmap", &portmap.Plugin{}) }
