// Command bandwidth limits the traffic to and from a container, chained
// after the plugin that makes its veth pair: a drop-in replacement for the
// reference CNI bandwidth plugin (pkg/bandwidth).
package main

import (
	"github.com/cnisuite/cni/pkg/bandwidth"
	"github.com/cnisuite/cni/pkg/cniplugin"
)

func main() { cniplugin.Main("bandwidth", bandwidth.Plugin{}) }
