// Command sbr routes what a pod sends from each address of an interface
// through a table of that address's own, chained after the plugin that
// gives the interface its addresses: a drop-in replacement for the
// reference CNI sbr plugin (pkg/sbr).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/sbr"
)

func main() { cniplugin.Main("sbr", sbr.Plugin{}) }
