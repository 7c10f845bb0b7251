// Command portmap forwards host ports to a container, chained after the
// plugin that gives the container its addresses: a drop-in replacement
// for the reference CNI portmap plugin.
package main

import "github.com/cnisuite/cni/pkg/cniplugin"

func main() { cniplugin.Main("portmap", &plugin{}) }
