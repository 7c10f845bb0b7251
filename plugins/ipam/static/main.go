// Command static is the static IPAM plugin (pkg/ipam/static).
package main

import (
	"github.com/cnisuite/cni/pkg/cniplugin"
	"github.com/cnisuite/cni/pkg/ipam/static"
)

func main() { cniplugin.Main("static", static.Plugin{}) }
