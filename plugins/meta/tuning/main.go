// Command tuning sets a container interface's MAC, MTU, promiscuous and
// all-multicast modes, transmit queue length and the pod's network
// sysctls, chained after the plugin that creates the interface, and
// restores them on DEL: a drop-in replacement for the reference CNI tuning
// plugin (pkg/tuning).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/tuning"
)

func main() { cniplugin.Main("tuning", &tuning.Plugin{}) }
